"""vtjson.py - JSON queries for the shell tests (lib.sh json_assert and
volume_table). The CLI's JSON nests volumes as it likes; the tests find
them by shape (an object with a name and a size) so they check values, not
the layout of the reply."""


def objects(x):
    """Every JSON object in x, depth first."""
    if isinstance(x, dict):
        yield x
        for v in x.values():
            yield from objects(v)
    elif isinstance(x, list):
        for v in x:
            yield from objects(v)


def volumes(doc):
    return [o for o in objects(doc) if "name" in o and "size" in o]


def find_volume(doc, name):
    return next((o for o in volumes(doc) if o["name"] == name), None)


def merge(extents):
    """Joins adjacent (offset, length, type) extents of the same type."""
    out = []
    for off, length, kind in extents:
        if out and out[-1][2] == kind and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + length, kind)
        else:
            out.append((off, length, kind))
    return out
