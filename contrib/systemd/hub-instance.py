# /etc/gilmsg/hub-<identity>.py: the configuration of gilmsg-hub@<identity>.service.
# fedmsg-hub --config-filename reads this one file instead of /etc/fedmsg.d, so it reads the
# bus from /etc/fedmsg.d itself (as fedmsg would) and adds this instance's own keys.
import os

import gilmsg  # noqa: F401  (first: also silences moksha's pkg_resources warning by hand)
import gilmsg.config

_name = os.environ.get("GILMSG_NAME", "hub")
_state = os.environ.get("GILMSG_STATE_DIR", "/var/lib/gilmsg/" + _name)

config = gilmsg.config.load()  # /etc/fedmsg.d, ~/.fedmsg.d, ./fedmsg.d, as fedmsg reads them
config.update(
    name=_name,  # the identity GilmsgConsumers acknowledge as (unless a consumer sets its own)
    zmq_enabled=True,
    # Durable de-duplication per consumer: <config_key>.gilmsg_dedup_path, e.g.
    # **{"my_consumer.gilmsg_dedup_path": _state + "/my_consumer.sqlite"},
)
