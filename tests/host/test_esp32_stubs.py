"""The ESP32 HAL against the MicroPython port we support, before it meets a board.

One MicroPython version is supported on the board: the one of the pinned
micropython-esp32-stubs (requirements.txt; docs/field-guide.md and the README name it).
- mypy (--check-untyped-defs) checks hal/esp32.py, and every other firmware file that
  imports machine, network, esp32 or ntptime, against those stubs.  The stubs are laid out
  as a "typings" directory (their .pyi files, linked) under the test's tmp dir: mypy takes
  the port's own time, math ... from there and the stdlib stubs as its typeshed, and it
  refuses site-packages on its path.  Errors inside the stubs and in files the checked
  ones merely import are not ours and are not reported.
- The fake machine layer of tests/unit/test_esp32_hal.py must be the port's API as the
  stubs have it: every fake class, method, function and constant that hal/esp32.py uses
  exists in the stubs, and every call the fake accepts (by position, and the keyword-only
  parameters by name) some overload of the real one accepts too, with the same parameter
  names where the real ones may be named.  So a call that passes against the fakes cannot
  fail on the board for its shape.  (MicroPython has no "/" in a def: a fake's parameter
  stands for a positional-only one under any name.)
"""
import ast
import importlib.metadata as md
import itertools
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")
FAKES = os.path.join(ROOT, "tests", "unit", "test_esp32_hal.py")
STUBS = ("micropython-esp32-stubs", "micropython-stdlib-stubs")
PORT_MODULES = ("machine", "network", "esp32", "ntptime")


def _pins():
    """name -> version pinned in requirements.txt."""
    out = {}
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            if m:
                out[m.group(1).lower()] = m.group(2)
    return out


def _micropython_version():
    """The MicroPython release the pinned stubs describe (1.29.0.post1 -> 1.29.0)."""
    return _pins()["micropython-esp32-stubs"].split(".post")[0]


def _parse(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


def _port_users():
    """Firmware modules (dotted, from firmware/) that import a module of the port."""
    out = {"hal.esp32"}
    for d, _, names in os.walk(FIRMWARE):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(d, name)
            for node in ast.walk(_parse(path)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) else []
                if any(m and m.split(".")[0] in PORT_MODULES for m in mods):
                    rel = os.path.relpath(path, FIRMWARE)[:-3].replace(os.sep, ".")
                    out.add(rel[:-len(".__init__")] if rel.endswith(".__init__") else rel)
    return sorted(out)


@pytest.fixture(scope="module")
def typings(tmp_path_factory):
    """The pinned stub distributions' .pyi files (and typeshed's VERSIONS), linked into
    one directory laid out as the stubs' own docs lay out "typings"."""
    out = tmp_path_factory.mktemp("typings")
    for dist in STUBS:
        try:
            files = md.distribution(dist).files
        except md.PackageNotFoundError:
            pytest.fail("%s is not installed: make setup (pip install -r requirements.txt)"
                        % dist)
        for f in files:
            s = str(f)
            if ".dist-info" in s or not (s.endswith(".pyi") or s.endswith("VERSIONS")):
                continue
            dst = out / s
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(f.locate())
    return out


def test_one_micropython_version_everywhere():
    pins = _pins()
    for dist in STUBS + ("mypy",):
        assert dist in pins, "%s is not pinned in requirements.txt" % dist
        assert md.version(dist) == pins[dist], (dist, md.version(dist), pins[dist])
    ver = _micropython_version()
    assert pins["micropython-stdlib-stubs"].startswith(ver + "."), pins
    for doc in ("README.md", os.path.join("docs", "field-guide.md")):
        with open(os.path.join(ROOT, doc)) as f:
            text = f.read()
        assert "MicroPython v%s" % ver in text, "%s does not name MicroPython v%s" % (doc, ver)
        assert "or later" not in re.sub(r"\s+", " ", text).split("MicroPython v%s" % ver)[1][:40]


def _mypy(typings, tmp_path, modules, root=FIRMWARE):
    ini = tmp_path / "mypy.ini"
    ini.write_text("[mypy]\ncheck_untyped_defs = True\nignore_errors = True\n"
                   "mypy_path = %s\ncustom_typeshed_dir = %s\n[mypy-%s]\n"
                   "ignore_errors = False\n" % (typings, typings, ",".join(modules)))
    files = [m.replace(".", os.sep) + ".py" for m in modules]
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ini),
                           "--cache-dir", str(tmp_path / "cache"), "--no-error-summary",
                           "--show-error-codes"] + files,
                          cwd=root, capture_output=True, text=True, timeout=300)


def test_port_code_type_checks_against_the_stubs(typings, tmp_path):
    mods = _port_users()
    assert "hal.esp32" in mods and "hal.sim" not in mods, mods
    res = _mypy(typings, tmp_path, mods)
    assert res.returncode == 0, "mypy on %s:\n%s%s" % (mods, res.stdout, res.stderr)


def test_the_check_finds_a_wrong_call(typings, tmp_path):
    """The same check on a copy of esp32.py with calls the port does not have fails."""
    with open(os.path.join(FIRMWARE, "hal", "esp32.py")) as f:
        src = f.read()
    bad = src.replace("machine.WDT(timeout=", "machine.WDT(timeout_ms=", 1) \
        .replace("atten=ADC.ATTN_11DB)", "atten=ADC.ATTN_11DB, width=12)", 1)
    assert bad.count("timeout_ms=") == 1 and bad.count("width=12") == 1
    (tmp_path / "hal").mkdir()
    (tmp_path / "hal" / "__init__.py").write_text("")
    (tmp_path / "hal" / "esp32.py").write_text(bad)
    res = _mypy(typings, tmp_path, ["hal.esp32"], root=str(tmp_path))
    assert res.returncode == 1, res.stdout + res.stderr
    assert '"timeout_ms" for "WDT"' in res.stdout and '"width" for "ADC"' in res.stdout, \
        res.stdout


# --- the fakes of tests/unit/test_esp32_hal.py against the stubs ---------------------------

class Sig:
    """A def's parameters: pos [(name, posonly, has_default)], kw {name: has_default}."""

    def __init__(self, args, method):
        pos = [(a.arg, True) for a in args.posonlyargs] + [(a.arg, False) for a in args.args]
        first = len(pos) - len(args.defaults)
        self.pos = [(n, only, k >= first) for k, (n, only) in enumerate(pos)]
        if method:
            self.pos = self.pos[1:]
        self.kw = {a.arg: d is not None for a, d in zip(args.kwonlyargs, args.kw_defaults)}
        self.star, self.stars = args.vararg is not None, args.kwarg is not None

    def shapes(self):
        """Every call this accepts: (positional names, keyword names)."""
        need = sum(1 for _, _, d in self.pos if not d)
        opt = [n for n, d in self.kw.items() if d]
        req = [n for n, d in self.kw.items() if not d]
        for n in range(need, len(self.pos) + 1):
            for r in range(len(opt) + 1):
                for kws in itertools.combinations(opt, r):
                    yield [p[0] for p in self.pos[:n]], set(req) | set(kws)

    def accepts(self, names, kws):
        """Does a call with positional arguments for `names` and keywords `kws` bind?"""
        if len(names) > len(self.pos) and not self.star:
            return False
        for (name, only, _), given in zip(self.pos, names):
            if not only and name != given:     # a named parameter: the same name
                return False
        rest = self.pos[len(names):]
        for kw in kws:
            if not (any(n == kw and not only for n, only, _ in rest) or kw in self.kw
                    or self.stars):
                return False
        return all(d or n in kws for n, _, d in rest) and \
            all(d or n in kws for n, d in self.kw.items())

    def __repr__(self):
        only = [k for k, p in enumerate(self.pos) if p[1]]
        return "(%s)" % ", ".join(
            [n + ("=" if d else "") + (", /" if only and k == only[-1] else "")
             for k, (n, _, d) in enumerate(self.pos)] +
            (["*"] if self.kw else []) + [n + ("=" if d else "") for n, d in self.kw.items()])


def _static(fn):
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)


def _defs(body):
    """name -> [FunctionDef] (overloads) and name -> literal value (constants, None if
    the stub gives no value) of a module or class body."""
    defs, consts = {}, {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.ClassDef):
            defs.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            consts[node.target.id] = node.value.value \
                if isinstance(node.value, ast.Constant) else None
        elif isinstance(node, ast.Assign):
            for tgt, val in _pairs(node):
                if isinstance(tgt, ast.Name):
                    consts[tgt.id] = val.value if isinstance(val, ast.Constant) else None
    return defs, consts


def _pairs(assign):
    """(target, value) of an assignment, tuples unpacked."""
    for tgt in assign.targets:
        if isinstance(tgt, ast.Tuple) and isinstance(assign.value, ast.Tuple):
            yield from zip(tgt.elts, assign.value.elts)
        else:
            yield tgt, assign.value


def _stub(typings, module):
    return _defs(_parse(str(typings / (module + ".pyi"))).body)


def _used_by_esp32():
    """(module, name) pairs and attribute names hal/esp32.py uses."""
    tree = _parse(os.path.join(FIRMWARE, "hal", "esp32.py"))
    names, attrs = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in PORT_MODULES:
            names.update((node.module, a.name) for a in node.names)
        elif isinstance(node, ast.Attribute):
            attrs.add(node.attr)
            if isinstance(node.value, ast.Name) and \
                    node.value.id in PORT_MODULES + ("time",):
                names.add((node.value.id, node.attr))
    return names, attrs


def _fakes():
    """(module, name) -> the ast node the fake layer gives for it: a ClassDef, a
    FunctionDef or Lambda, or a Constant.  ``esp32.time = FakeTime`` makes FakeTime's
    own functions the time module's."""
    tree = _parse(FAKES)
    top = {n.name: n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    out = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        for tgt, val in _pairs(node):
            if not (isinstance(tgt, ast.Attribute) and isinstance(tgt.value, ast.Name)):
                continue
            mod = tgt.value.id
            if isinstance(val, ast.Name):
                val = top.get(val.id, val)
            if mod == "esp32" and tgt.attr == "time":
                for fn in val.body:
                    if isinstance(fn, ast.FunctionDef):
                        out[("time", fn.name)] = fn
            elif mod in PORT_MODULES:
                out[(mod, tgt.attr)] = val
    return out


def _fn_problems(where, fake, overloads, method):
    """What is wrong with fake (a def or lambda) against the stub's overloads."""
    if not overloads:
        return ["%s: not in the stubs" % where]
    sig = Sig(fake.args, method and not _static(fake))
    real = [Sig(f.args, method) for f in overloads]
    bad = [(names, sorted(kws)) for names, kws in sig.shapes()
           if not any(r.accepts(names, kws) for r in real)]
    if bad:
        return ["%s%r: the port has no %s for the calls %s" % (where, sig, real, bad)]
    return []


def _class_problems(where, fake, stub, used):
    defs, consts = _defs(stub.body)
    out = []
    for node in fake.body:
        if isinstance(node, ast.FunctionDef) and (node.name == "__init__" or node.name in used):
            out += _fn_problems("%s.%s" % (where, node.name), node, defs.get(node.name), True)
        elif isinstance(node, ast.Assign):
            for tgt, val in _pairs(node):
                # constants (upper case); the fakes' own knobs are lower case
                if isinstance(tgt, ast.Name) and tgt.id in used and tgt.id.isupper():
                    out += _const_problems("%s.%s" % (where, tgt.id), val, consts, tgt.id)
    return out


def _const_problems(where, val, consts, name):
    if name not in consts:
        return ["%s: not in the stubs" % where]
    if isinstance(val, ast.Constant) and consts[name] is not None and \
            val.value != consts[name]:
        return ["%s = %r, the port has %r" % (where, val.value, consts[name])]
    return []


def fake_layer_problems(typings, fakes=None):
    """Every mismatch between the fake layer and the stubs, as text (empty: none)."""
    names, attrs = _used_by_esp32()
    fakes = _fakes() if fakes is None else fakes
    stubs = {}
    out = []
    for (mod, name), node in sorted(fakes.items(), key=lambda kv: kv[0]):
        if (mod, name) not in names:
            continue            # the tests' own knobs (machine.cause ...)
        if mod not in stubs:
            stubs[mod] = _stub(typings, mod)
        defs, consts = stubs[mod]
        where = "%s.%s" % (mod, name)
        if isinstance(node, ast.ClassDef):
            real = [d for d in defs.get(name, ()) if isinstance(d, ast.ClassDef)]
            out += _class_problems(where, node, real[0], attrs) if real else \
                ["%s: not in the stubs" % where]
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
            out += _fn_problems(where, node, defs.get(name), False)
        else:
            out += _const_problems(where, node, consts, name)
    return out


def test_fake_machine_layer_is_the_ports_api(typings):
    fakes = _fakes()
    # the fakes esp32.py meets: every class, and the module functions and constants
    for key in [("machine", n) for n in ("Pin", "PWM", "ADC", "WDT", "RTC", "Timer",
                                          "reset_cause", "unique_id", "WDT_RESET")] + \
            [("network", "WLAN"), ("network", "STA_IF"), ("ntptime", "time"),
             ("time", "ticks_us"), ("time", "gmtime")]:
        assert key in fakes, key
    problems = fake_layer_problems(typings, fakes)
    assert problems == [], "\n".join(problems)


def test_the_fake_check_finds_a_mismatch(typings):
    """A fake ADC that takes atten by position, a PWM without keyword-only freq, an RTC
    method the port lacks and a wrong constant are each reported."""
    fakes = _fakes()
    src = ("class FakeADC:\n    ATTN_11DB = 2\n    def __init__(self, id, atten=None): pass\n"
           "    def read_u16(self): pass\n"
           "class FakePWM:\n    def __init__(self, pin, freq=0, duty_u16=0): pass\n"
           "class FakeRTC:\n    def datetime(self, t): pass\n")
    tree = {n.name: n for n in ast.parse(src).body}
    fakes[("machine", "ADC")] = tree["FakeADC"]
    fakes[("machine", "PWM")] = tree["FakePWM"]
    fakes[("machine", "RTC")] = tree["FakeRTC"]
    problems = "\n".join(fake_layer_problems(typings, fakes))
    assert "machine.ADC.__init__(id, atten=)" in problems, problems
    assert "machine.ADC.ATTN_11DB = 2, the port has 3" in problems, problems
    assert "machine.PWM.__init__(pin, freq=, duty_u16=)" in problems, problems
    assert "machine.RTC.datetime(t)" in problems, problems
    assert "read_u16" not in problems
    assert len(problems.splitlines()) == 4, problems
