"""``zonegate up``: the whole hybrid-mode stack on one machine (see ``stack``)."""

from zonegate.local_stack.ports import StackError, StackPorts
from zonegate.local_stack.stack import LocalStack, StackOptions, external_database

__all__ = ["LocalStack", "StackError", "StackOptions", "StackPorts", "external_database"]
