# Example fedmsg.d snippet enabling the example consumer in fedmsg-hub (merge into your config).
# The hub also needs the usual gilmsg keys: endpoints, certnames, ssldir, ca_cert_location,
# crl_location; endpoints must use 127.0.0.1 or a real address (moksha refuses "localhost").
config = {
    "zmq_enabled": True,             # fedmsg-hub (moksha) needs it
    "validate_signatures": True,     # forged/tampered messages: never consumed nor acknowledged
    "name": "hub",                   # default identity: endpoints["hub"], certnames["hub"]
    "gilmsg_example": True,          # run ExampleConsumer
    "gilmsg_example.topic": "",      # every topic
    "gilmsg_example.output": "/tmp/gilmsg_example.jsonl",
    # "gilmsg_example.gilmsg_name": "worker",  # acknowledge as another identity
}
