import argparse
import csv
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class Account:
    name: str
    tier: str = "free"
    requests: int = 0
    tokens: int = 0
    models: Dict[str, int] = field(default_factory=dict)

    def add(self, model: str, prompt: int, completion: int) -> None:
        self.requests += 1
        self.tokens += prompt + completion
        self.models[model] = self.models.get(model, 0) + prompt + completion


def load(path: str) -> List[dict]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                row["prompt"] = int(row["prompt"])
                row["completion"] = int(row["completion"])
            except (KeyError, ValueError) as e:
                print(f"skipping bad row {row!r}: {e}", file=sys.stderr)
                continue
            rows.append(row)
    return rows


def summarize(rows: List[dict], top: Optional[int] = None) -> List[Account]:
    accounts: Dict[str, Account] = {}
    for row in rows:
        acc = accounts.setdefault(row["account"], Account(row["account"]))
        acc.add(row.get("model", "unknown"), row["prompt"], row["completion"])
    result = sorted(accounts.values(), key=lambda a: a.tokens, reverse=True)
    return result[:top] if top else result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Summarize token usage per account")
    p.add_argument("csv", help="usage export with account,model,prompt,completion")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)

    accounts = summarize(load(args.csv), args.top)
    if args.json:
        json.dump([a.__dict__ for a in accounts], sys.stdout, indent=2)
        print()
        return 0

    print(f"{'account':<20} {'requests':>10} {'tokens':>12}")
    for a in accounts:
        print(f"{a.name:<20} {a.requests:>10} {a.tokens:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
