"""Every public class, function and method of the API says what it does (`help()` is useful),
and the public API is typed: the package ships `py.typed` and its signatures are annotated."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import inmem
from inmem import cluster, database, errors, pipeline, sections, transaction, types

ROOT = Path(__file__).resolve().parents[2]

#: the classes whose public methods and properties make up the API
CLASSES = [
    database.Database, pipeline.Pipeline, transaction.Transaction, cluster.Cluster,
    sections.KV, sections.Events, sections.StateCells, sections.Traces, sections.JSON,
    sections.Runs,
    transaction.TxKV, transaction.TxEvents, transaction.TxState, transaction.TxTraces,
    transaction.TxJSON,
    *[c for _, c in inspect.getmembers(types, inspect.isclass)
      if c.__module__ == types.__name__ and issubclass(c, tuple)],
    *[getattr(errors, name) for name in errors.__all__ if name != "from_wire"],
]
FUNCTIONS = [inmem.open, inmem.connect, errors.from_wire]


def _async_api():
    """The asyncio API's classes (AsyncDatabase and what it hands out), the LangGraph
    adapters (their async methods included) and the asyncio entry points."""
    import inmem.asyncio
    from inmem import async_database as ad
    from inmem.langgraph import InmemSaver, InmemStore
    classes = [ad.AsyncDatabase, ad.AsyncPipeline, ad.AsyncTransaction, ad.AsyncKV,
               ad.AsyncEvents, ad.AsyncStateCells, ad.AsyncTraces, ad.AsyncJSON, ad.AsyncRuns,
               ad.AsyncTxKV, ad.AsyncTxEvents, ad.AsyncTxState, ad.AsyncTxTraces, ad.AsyncTxJSON,
               InmemSaver, InmemStore]
    return classes, [inmem.asyncio.open, inmem.asyncio.connect]


def _own_public_members(cls):
    """(name, member) defined in the class body itself, not dunder, not private."""
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if inspect.isfunction(member) or isinstance(member, property):
            yield name, member


def _undocumented(classes, functions) -> list:
    missing = []
    for cls in classes:
        if not (cls.__doc__ or "").strip() or cls.__doc__.startswith(f"{cls.__name__}("):
            missing.append(cls.__qualname__)  # the NamedTuple default is not a docstring
        for name, member in _own_public_members(cls):
            if not (member.__doc__ or "").strip():
                missing.append(f"{cls.__qualname__}.{name}")
    missing += [f.__qualname__ for f in functions if not (f.__doc__ or "").strip()]
    return missing


def test_every_public_class_method_and_function_has_a_docstring():
    missing = _undocumented(CLASSES, FUNCTIONS)
    assert not missing, f"public names without a docstring: {missing}"


def test_the_asyncio_api_and_the_langgraph_adapters_have_docstrings_too():
    classes, functions = _async_api()
    missing = _undocumented(classes, functions)
    assert not missing, f"public names without a docstring: {missing}"
    # The async methods the adapters add to LangGraph's interfaces, each its own.
    from inmem.langgraph import InmemSaver, InmemStore
    for cls, names in ((InmemSaver, ["aget_tuple", "alist", "aput", "aput_writes",
                                     "adelete_thread", "adelete_for_runs", "acopy_thread",
                                     "aprune"]),
                       (InmemStore, ["abatch"])):
        for name in names:
            assert name in vars(cls) and (vars(cls)[name].__doc__ or "").strip(), name


def test_every_name_the_package_exports_is_documented():
    for name in inmem.__all__:
        obj = getattr(inmem, name)
        assert (obj.__doc__ or "").strip(), name


def test_public_methods_are_annotated():
    unannotated = []
    for cls in CLASSES[:15]:  # the behaviour classes; records and errors are declared types
        for name, member in _own_public_members(cls):
            if isinstance(member, property):
                member = member.fget
            sig = inspect.signature(member)
            params = [p for p in list(sig.parameters.values())[1:]
                      if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if sig.return_annotation is inspect.Signature.empty or any(
                    p.annotation is inspect.Parameter.empty for p in params):
                unannotated.append(f"{cls.__qualname__}.{name}")
    assert not unannotated, f"public methods without type hints: {unannotated}"


def test_the_package_is_marked_typed_and_ships_the_marker():
    assert (ROOT / "inmem" / "py.typed").is_file()
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'inmem = \[[^\]]*"py\.typed"', text), "py.typed is not package data"


def test_no_docstring_points_at_a_document_the_repository_does_not_have():
    # Every *.md a docstring, comment or doc page names must be a file of the
    # repository, and nothing may point outside it: users have only what ships.
    bad = []
    sources = [p for d in ("inmem", "shard", "wal", "recovery", "coordinator", "bench",
                           "examples", "scripts", "configs", "docs")
               for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".md", ".toml", ".sh")
               and "results" not in p.parts and "__pycache__" not in p.parts]
    sources.append(ROOT / "README.md")
    for path in sources:
        text = path.read_text()
        for up in re.findall(r"(?<![\w.])((?:\.\./)+[\w.-]+)", text):
            if not (path.parent / up).resolve().is_relative_to(ROOT.resolve()):
                bad.append(f"{path.relative_to(ROOT)}: {up} (outside the repository)")
        for ref in re.findall(r"\b([A-Za-z_/.-]+\.md)\b", text):
            candidates = [ROOT / ref, path.parent / ref, ROOT / "docs" / ref]
            if not any(c.is_file() for c in candidates):
                bad.append(f"{path.relative_to(ROOT)}: {ref}")
    assert not bad, bad


def test_the_reference_covers_every_public_method():
    # docs/api.md names each method of the Database and its sections.
    text = (ROOT / "docs" / "api.md").read_text()
    absent = []
    for cls in CLASSES[:10]:
        for name, _ in _own_public_members(cls):
            if f"{name}(" not in text and f"`{name}`" not in text and f".{name}" not in text:
                absent.append(f"{cls.__name__}.{name}")
    assert not absent, f"not in docs/api.md: {absent}"


def test_help_on_a_live_databases_methods_says_what_they_do(db):
    # The embedded store's fast KV calls are closures made per database: they carry
    # the section's docstrings, so help(db.kv.put) reads the same on every backend.
    import inspect

    from inmem.sections import KV
    for name in ("get", "put", "put_many", "get_linked"):
        method = getattr(db.kv, name)
        assert inspect.getdoc(method) == inspect.getdoc(getattr(KV, name)), name
        assert method.__name__ == name
