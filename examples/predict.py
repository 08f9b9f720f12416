"""Score records with a trained model through the evaluator, with the Python SDK.

The seed's question: what does a 150 m² 普通住宅 in B区 cost? After
``examples/submit_and_wait.py`` trained a model named ``houses`` (and the evaluator made
it champion)::

    python examples/predict.py --tenant demo --model houses

``--model`` takes ``NAME`` or ``NAME@champion`` (the champion) or ``NAME@<model id>``.
"""

from __future__ import annotations

import argparse
import asyncio

from lepton import LeptonClient, PredictionFailed

HOUSES = [
    {"面积": 150.0, "房型": "普通住宅", "区域": "B区"},
    {"面积": 88.5, "房型": "公寓", "区域": "A区"},
]


async def main(tenant: str, model: str) -> int:
    async with LeptonClient(tenant=tenant) as client:
        try:
            result = await client.predict(model, HOUSES, timeout_s=60)
        except PredictionFailed as failure:
            print(f"{failure.code}: {failure.message}")
            return 1
    print(f"{result.model_name} ({result.model_id}, {result.problem_type})")
    for house, prediction in zip(HOUSES, result.predictions, strict=True):
        print(f"  {house} -> {prediction}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--model", default="houses")
    arguments = parser.parse_args()
    raise SystemExit(asyncio.run(main(arguments.tenant, arguments.model)))
