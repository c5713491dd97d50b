"""An example gilmsg hub consumer package: see :mod:`gilmsg_example.consumers`."""
