"""The keys a put and a get_tuple make from a saver's per-namespace memory
(`NamespaceKeys`) are the keys of the layout (`keys.py`'s functions), whatever the
names, and that memory stays bounded however many namespaces and channels it meets."""

from hypothesis import given, settings
from hypothesis import strategies as st

from inmem.langgraph import keys
from inmem.langgraph.keys import NamespaceKeys, namespace_keys

#: names built from the characters the layout escapes, and others
_names = st.text(alphabet=st.sampled_from(list("ab%/:2F3A5é🎉")), max_size=12)


@settings(max_examples=200, deadline=None)
@given(ns=_names, channel=_names, cid=_names.filter(bool))
def test_namespace_keys_are_the_layouts_keys(ns, channel, cid):
    made = NamespaceKeys(ns)
    assert made[channel] == keys.blob_prefix(ns, channel)
    assert f"{made[channel]}7.5" == keys.blob_key(ns, channel, "7.5")
    assert made.head == keys.head_key(ns)
    assert f"{made.checkpoints}{cid}" == keys.checkpoint_key(ns, cid)
    assert made.checkpoints == keys.checkpoint_prefix(ns)
    assert f"{made.writes}{cid}" == keys.writes_key(ns, cid)


def test_the_memory_of_namespaces_and_channels_is_bounded(monkeypatch):
    monkeypatch.setattr(keys, "NS_KEYS_MAX", 3)
    cache: dict = {}
    for i in range(10):
        made = namespace_keys(cache, f"ns{i}")
        assert cache[f"ns{i}"] is made and len(cache) <= 3
    made = NamespaceKeys("")
    for i in range(10):
        assert made[f"c{i}"] == keys.blob_prefix("", f"c{i}") and len(made) <= 3
