import re
from pathlib import Path

from setuptools import find_packages, setup

_here = Path(__file__).parent


def _version() -> str:
    """The one version of the project: ``__version__`` in gilmsg/__init__.py, read as text.

    Read, not imported: setup.py must run before gilmsg's dependencies are installed.
    """
    text = (_here / "gilmsg" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("gilmsg/__init__.py has no __version__ line")
    return match.group(1)


setup(
    name="gilmsg",
    version=_version(),
    description="A reliability layer for fedmsg: required recipients and signed acknowledgements",
    long_description=(_here / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    author="Ralph Bean and the gilmsg contributors",
    author_email="rbean@redhat.com",
    url="https://github.com/fedora-infra/gilmsg",
    project_urls={
        "Source": "https://github.com/fedora-infra/gilmsg",
        "Changelog": "https://github.com/fedora-infra/gilmsg/blob/main/CHANGELOG.rst",
    },
    # SPDX expression (PEP 639), as fedmsg and gilmsg 0.1.2 ("LGPLv2+").
    license_expression="LGPL-2.1-or-later",
    license_files=["LICENSE"],
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: Console",
        "Intended Audience :: Developers",
        "Intended Audience :: System Administrators",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Topic :: System :: Networking",
        "Topic :: System :: Distributed Computing",
        "Typing :: Typed",
    ],
    python_requires=">=3.11",
    packages=find_packages(include=["gilmsg", "gilmsg.*"]),
    # The code is annotated (PEP 561): type checkers read gilmsg's hints from the installed copy;
    # mypy gilmsg is clean (./run tests runs it).
    package_data={"gilmsg": ["py.typed"]},
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
        # gilmsg over AMQP (RabbitMQ, fedora-messaging): gilmsg.transport = "amqp".
        "amqp": ["pika>=1.3", "fedora-messaging>=3.4"],
        # A PostgreSQL outbox / consumed-message record (postgresql:// locations): psycopg 3.
        "postgresql": ["psycopg[binary]>=3.2"],
        "test": ["pytest", "pytest-timeout", "ruff", "mypy", "hypothesis", "pika>=1.3",
                 "fedora-messaging>=3.4", "psycopg[binary]>=3.2",
                 # Only to prove docs/outbox.rst's SQLAlchemy recipe for publish(connection=).
                 "sqlalchemy>=2"],
        # ./run docs: the Sphinx site of docs/ (user guide, CLI and API reference).
        "docs": ["sphinx>=7", "sphinx-click>=5"],
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
