from zonegate.cli import main

main()
