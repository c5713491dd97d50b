"""gilmsg's core: every protocol decision, with the standard library only.

No sockets, no threads, no clock of its own, no cryptography: :mod:`gilmsg.core.wire` is the
wire format, :mod:`gilmsg.core.delivery` the publisher's state machine (events in, actions
out), :mod:`gilmsg.core.receiving` the recipient's state machine (events in, actions out),
:mod:`gilmsg.core.subscriptions` what a publisher knows of its subscribers. A verified
signature is an input here (the signer's Common Name, or None); certificates are never parsed.
``tests/unit/test_core.py`` checks in a fresh interpreter that importing the core loads nothing
outside the standard library.
"""
