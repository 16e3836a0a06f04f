"""The fee model in force: received from the platform, vetted, kept on flash.

update() takes a compact model (pile.protocol decodes feeModelUpdateSrv into one): a
sound model replaces the stored one atomically; an unsound one (or one that cannot be
stored) is refused with the reason and the old one stays.  A session keeps a reference
to the model it started with (a new model is a new object, the old one is never
changed), so a model received mid-charge applies from the next session.

The vetting (pile.feemodel) is imported only for that moment, at boot and when a model
arrives, and dropped again afterwards so that its code leaves the heap.
"""
import sys

from pile import log, store

FILE = "feemodel.json"


def vet(model):
    """pile.feemodel.check(model), then forget the module (see above)."""
    import pile.feemodel as fm
    try:
        return fm.check(model)
    finally:
        del sys.modules["pile.feemodel"]
        del sys.modules["pile"].feemodel


class Tariff:
    def __init__(self):
        self.model = store.load(FILE, None, vet)

    def model_id(self):
        return self.model["id"] if self.model else ""

    def update(self, model):
        """Return None when the model was taken, else the reason it was refused."""
        why = vet(model)
        if why:
            log.warn("tariff", "fee model refused: %s" % why)
            return why
        if not store.save(FILE, model):
            return "cannot store the fee model"
        self.model = model
        log.info("tariff", "fee model %s in force (%d segments)"
                 % (model["id"], len(model["starts"])))
        return None
