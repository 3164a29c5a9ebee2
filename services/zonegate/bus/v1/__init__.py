"""Generated protobuf modules of the bus messages (from proto/zonegate/bus/v1). Do not edit."""
