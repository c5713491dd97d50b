"""A gilmsg callback for the real ``fedora-messaging consume`` (test_amqp_consumer.py)."""

from __future__ import annotations

from fedora_messaging.exceptions import Nack

from gilmsg.consumers.amqp import GilmsgCallback


class PrintingCallback(GilmsgCallback):
    """Prints ``consumed <msg_id>`` for each consume(); a message whose body says
    ``nack_once`` is refused (Nack: back to the queue) the first time."""

    nacked: set[str] = set()

    def consume(self, message):
        body = message.body
        msg = body.get("msg")
        if isinstance(msg, dict) and msg.get("nack_once") and body["msg_id"] not in self.nacked:
            self.nacked.add(body["msg_id"])
            print("nacked", body["msg_id"], flush=True)
            raise Nack()
        print("consumed", body.get("msg_id"), message.topic, flush=True)


class CrashingCallback(PrintingCallback):
    """Dies (exit 3) right after handling a message whose body says ``crash_after`` and that it
    consumed: consume() done, fedora-messaging's ack to the broker not sent yet."""

    def consume(self, message):
        self.consumed_now = message.body.get("msg_id")
        super().consume(message)

    def __call__(self, message):
        self.consumed_now = None
        super().__call__(message)
        msg = message.body.get("msg") if isinstance(message.body, dict) else None
        if isinstance(msg, dict) and msg.get("crash_after") and self.consumed_now:
            import os

            os._exit(3)


class SettlingCallback(PrintingCallback):
    """``processed`` mode (the class attribute): a message whose body says ``fail`` raises
    ValueError with that text, ``drop`` raises fedora-messaging's Drop, ``halt`` HaltConsumer
    (requeue false: fedora-messaging acks it and stops)."""

    gilmsg_ack_mode = "processed"

    def consume(self, message):
        from fedora_messaging.exceptions import Drop, HaltConsumer

        msg = message.body.get("msg") if isinstance(message.body, dict) else None
        if isinstance(msg, dict) and "fail" in msg:
            print("failing", message.body["msg_id"], flush=True)
            raise ValueError(msg["fail"])
        if isinstance(msg, dict) and msg.get("drop"):
            print("dropping", message.body["msg_id"], flush=True)
            raise Drop()
        super().consume(message)
        if isinstance(msg, dict) and msg.get("halt"):
            raise HaltConsumer(exit_code=0, reason="asked to halt", requeue=False)


class NoConsume(GilmsgCallback):
    """A subclass that forgot consume(): refused like the base class."""
