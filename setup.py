from setuptools import find_packages, setup

setup(
    name="gilmsg",
    version="0.2.0",
    description="A reliability layer for fedmsg: required recipients and signed acknowledgements",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="LGPLv2+",
    python_requires=">=3.11",
    packages=find_packages(include=["gilmsg", "gilmsg.*"]),
    install_requires=[
        # The extras bring pygments/psutil, without which fedmsg-tail and fedmsg-hub fail.
        "fedmsg[commands,consumers]>=1.1.7",
        "moksha.hub>=1.5.17",
        # moksha.hub and fedmsg import pkg_resources at run time; setuptools 82 removed it.
        "setuptools>=76,<82",
        "Twisted",
        "pyzmq>=25",
        "click>=8",
        "cryptography>=42",
        # /metrics of --monitoring and gilmsg.monitoring (imported only when enabled).
        "prometheus_client>=0.17",
    ],
    extras_require={
        # gilmsg over AMQP (RabbitMQ, fedora-messaging): gilmsg_transport = "amqp".
        "amqp": ["pika>=1.3", "fedora-messaging>=3.4"],
        "test": ["pytest", "pytest-timeout", "ruff", "hypothesis", "pika>=1.3",
                 "fedora-messaging>=3.4"],
        # bench/run_all.py draws the latency distribution; tests never import it.
        "bench": ["matplotlib"],
    },
    entry_points={
        "console_scripts": [
            "gilmsg-certs=gilmsg.commands.certs:main",
            "gilmsg-logger=gilmsg.commands.logger:main",
            "gilmsg-tail=gilmsg.commands.tail:main",
            "gilmsg-demo=gilmsg.commands.demo:main",
            "gilmsg-sandbox=gilmsg.commands.sandbox:main",
            "gilmsg-ping=gilmsg.commands.ping:main",
            "gilmsg-bridge=gilmsg.commands.bridge:main",
            "gilmsg-outbox=gilmsg.commands.outbox:main",
        ],
        # The durable outbox's runner inside fedmsg-hub (inert unless gilmsg.outbox.runner).
        "moksha.producer": ["gilmsg_outbox=gilmsg.outbox.plugin:OutboxProducer"],
        # The fixture gilmsg_sandbox and the marker of the same name, in every pytest run.
        "pytest11": ["gilmsg=gilmsg.testing.pytest_plugin"],
    },
)
