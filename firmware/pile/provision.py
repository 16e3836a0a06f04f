"""One-key cloud link (PROTOCOL.md §1): the MQTT credentials, stored or provisioned.

Provisioner.creds() returns the stored credentials, or provisions (retrying with
back-off and jitter, logging each reason, the last one kept in last_error) until it has
some; forget() drops them when the broker refuses them.  The signed request, the HTTP GET
and the parsing live in pile/onekey.py: it is imported only while it is needed and
dropped from memory afterwards.  main.py imports it at boot before the rest of the code (its
code then leaves one hole among the code when it goes, not holes scattered over a full
heap); it stays loaded until the first credentials are in hand.  The secret key and the
MQTT password are never logged.
"""
import sys

from pile import log, store

FILE = "creds.json"


def _unload():
    """Drop pile.onekey, so that the garbage collector frees its code."""
    sys.modules.pop("pile.onekey", None)
    try:
        del sys.modules["pile"].onekey
    except (AttributeError, KeyError):
        pass


def _check(doc):
    """Content check of creds.json (store.load): the four credentials, a known scheme."""
    for key in ("mqtt_account", "mqtt_password", "mqtt_id", "mqtt_server_addr"):
        if type(doc.get(key)) is not str or not doc[key]:
            return "%s missing" % key
    if doc["mqtt_server_addr"].split("://")[0] not in ("tcp", "mqtt", "ssl", "mqtts"):
        return "mqtt_server_addr scheme unsupported"
    return None


class Provisioner:
    def __init__(self, cfg, board):
        self.cfg, self.board = cfg, board       # board: the clock (onekey sets it)
        self.last_error = None
        self.attempts = 0
        self.stored = store.load(FILE, {}, _check) or None
        if self.stored:
            _unload()                   # not needed while the credentials hold

    async def creds(self):
        if not self.stored:
            from pile import onekey
            try:
                self.stored = await onekey.provision(self)
            finally:
                _unload()
        return self.stored

    def save(self, creds):
        """Keep credentials that onekey checked (creds.json)."""
        store.save(FILE, creds)

    def forget(self, why):
        log.warn("prov", "dropping stored credentials: %s" % why)
        self.stored = None
        store.remove(FILE)
