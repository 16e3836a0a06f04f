"""The fee model in force: received from the platform, validated, kept on flash.

update() takes a feeModelUpdateSrv body: a valid model replaces the stored one
atomically; an invalid one (or one that cannot be stored) is refused with the reason and
the old one stays.  A session keeps a reference to the model it started with (a new
model is a new object, the old one is never changed), so a model received mid-charge
applies from the next session.  The id in force is reported in firmwareEvt.ele_model_id.

The validation (pile.feemodel) is imported only for that moment, at boot and when a
model arrives, and dropped again afterwards so that its code leaves the heap.
"""
import sys

from pile import log, store

FILE = "feemodel.json"


def _vet(body, stored):
    """pile.feemodel's check(body) (stored) or parse(body) (arrived), then forget it."""
    import pile.feemodel as fm
    try:
        return fm.check(body) if stored else fm.parse(body)
    finally:
        del sys.modules["pile.feemodel"]
        del sys.modules["pile"].feemodel


class Tariff:
    def __init__(self):
        model = store.load(FILE)
        why = _vet(model, True) if model is not None else None
        if why:
            log.error("tariff", "stored fee model rejected (%s); none in force" % why)
            model = None
        self.model = model

    def model_id(self):
        return self.model["id"] if self.model else ""

    def update(self, body):
        """Return None when the model was taken, else the reason it was refused."""
        model, why = _vet(body, False)
        if why:
            log.warn("tariff", "fee model refused: %s" % why)
            return why
        if not store.save(FILE, model):
            return "cannot store the fee model"
        self.model = model
        log.info("tariff", "fee model %s in force (%d segments)"
                 % (model["id"], len(model["starts"])))
        return None
