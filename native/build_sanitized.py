"""The native extension built with AddressSanitizer and UndefinedBehaviorSanitizer, beside the normal one:

    python native/build_sanitized.py build/sanitize      # make sanitize does this, then runs the tests

It writes DIR/wim2vhd/: the sanitized _native module, and links to every other file and folder of the
package, so that with DIR first on PYTHONPATH `import wim2vhd` finds the sanitized build (before the editable
install's finder, which Python asks last) and the package's code is the work tree's.  The normal build in
wim2vhd/ is not touched.  Running it needs the ASan runtime loaded first (LD_PRELOAD) and leak checks off
(Python keeps its objects until exit by design): see the Makefile's sanitize target.
"""
import os
import pathlib
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent


def main(out: str) -> None:
    out_dir = pathlib.Path(out).resolve()
    pkg = out_dir / "wim2vhd"
    if pkg.exists():
        shutil.rmtree(pkg)
    os.environ["W2V_SANITIZE"] = "1"
    sys.path.insert(0, str(HERE))
    import build_native
    so = build_native.ffibuilder.compile(tmpdir=str(out_dir / "tmp"), verbose=False)
    pkg.mkdir(parents=True)
    shutil.move(so, pkg / pathlib.Path(so).name)
    shutil.copyfile(HERE / "sanitize_site.py", out_dir / "sitecustomize.py")  # ASan for Python children only
    for entry in (REPO / "wim2vhd").iterdir():
        if entry.name.startswith("_native") or entry.name == "__pycache__":
            continue
        (pkg / entry.name).symlink_to(entry)
    print(pkg / pathlib.Path(so).name)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/sanitize")
