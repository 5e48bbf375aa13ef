"""The buggy variants (tests/variants/NAME.toml): list, show, build, check.

    python tools/variant.py list                 every variant: stage, name, bug
    python tools/variant.py diff NAME            the variant as a diff against its solution
    python tools/variant.py build NAME DEST      write DEST/STAGE/, then grade it by hand:
        python -m pytest --impl=DEST tests/test_NN_*.py
    python tools/variant.py check                every variant still applies to its solution
                                                 (exit 1, listing the stale ones, if not)
"""

import argparse
import sys

from grader import variants


def list_variants():
    for variant in variants.load_variants():
        print(f"{variant.stage:14} {variant.name:34} {variant.bug}")
    return 0


def show_diff(name):
    print(variants.diff_text(variants.load_variant(name)))
    return 0


def build(name, dest):
    target = variants.build(name, dest)
    variant = variants.load_variant(name)
    print(f"built {target}\n  bug: {variant.bug}\n  caught by: {', '.join(variant.caught_by)}\n"
          f"  grade it: python -m pytest --impl={dest} tests/test_{variant.stage[:2]}_*.py")
    return 0


def check():
    stale = variants.problems()
    names = variants.variant_names()
    for name, problem in stale.items():
        print(problem, end="\n\n")
    print(f"{len(names) - len(stale)} of {len(names)} variants apply to their solutions"
          + (f"; stale or malformed: {', '.join(stale)}" if stale else ""))
    return 1 if stale else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="The course's buggy variants, kept as replace specs.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every variant: stage, name, bug")
    commands.add_parser("diff", help="a variant as a diff against its solution").add_argument("name")
    build_parser = commands.add_parser("build", help="write DEST/STAGE/ with the bug put back")
    build_parser.add_argument("name")
    build_parser.add_argument("dest")
    commands.add_parser("check", help="every variant applies to its solution (exit 1 if not)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return list_variants()
        if args.command == "diff":
            return show_diff(args.name)
        if args.command == "build":
            return build(args.name, args.dest)
        return check()
    except variants.VariantError as error:
        print(error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
