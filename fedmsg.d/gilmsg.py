# Local development bus for gilmsg: every endpoint on 127.0.0.1 (ports below Linux's ephemeral
# range, so no outgoing connection can hold them), certificates in ../dev-certs
# (created by `./run demo` or `gilmsg-certs dev`). fedmsg reads this file when a command runs
# from the repository root (./fedmsg.d/); elsewhere pass --config-filename fedmsg.d/gilmsg.py.
import inspect
import os

# fedmsg compiles config files without __file__; the code object still knows its file name.
_here = os.path.dirname(os.path.abspath(inspect.currentframe().f_code.co_filename))
_ssldir = os.path.join(os.path.dirname(_here), "dev-certs")

#: The services of the local bus; each is a fedmsg name, a certificate CN and a recipient.
_services = ["publisher", "recipient-a", "recipient-b", "hub"]

config = dict(
    topic_prefix="org.gilmsg",
    environment="dev",
    endpoints={
        "publisher": ["tcp://127.0.0.1:29100", "tcp://127.0.0.1:29101"],
        "recipient-a": ["tcp://127.0.0.1:29110"],
        "recipient-b": ["tcp://127.0.0.1:29120"],
        "hub": ["tcp://127.0.0.1:29130"],
        "relay_outbound": ["tcp://127.0.0.1:29140"],
    },
    # fedmsg-relay listens here; `gilmsg-logger --active` and fedmsg-logger publish through it.
    relay_inbound=["tcp://127.0.0.1:29141"],
    zmq_enabled=True,
    sign_messages=True,
    validate_signatures=True,
    ssldir=_ssldir,
    ca_cert_location=os.path.join(_ssldir, "ca.crt"),
    crl_location=os.path.join(_ssldir, "crl.pem"),
    certnames={name: name for name in _services},
    # Subscribers find a late publisher within 100 ms instead of fedmsg's 1 s back-off.
    zmq_reconnect_ivl=10,
    zmq_reconnect_ivl_max=100,
)
