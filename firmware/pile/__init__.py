"""The pile application: knows the hardware only through the HAL (see hal/__init__.py)."""
VERSION = "0100000001"
