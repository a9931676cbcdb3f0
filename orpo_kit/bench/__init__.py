"""`orpo-kit bench`: orpo_kit against TRL's ORPOTrainer, same model, same pairs, same settings.

- `plan`: knobs, implementations, variants and the run order;
- `workloads`: the benchmark's models and preference pairs;
- `machine`: matmul rate, busy check, machine description;
- `runners`: one measured run of either trainer, in its own process;
- `report`: aggregation, acceptance checks, table and chart;
- `command`: the command line and the orchestration of the worker processes.
"""

from .command import add_arguments, main, run

__all__ = ["add_arguments", "main", "run"]
