"""Your own reward function, named by its dotted path in `reward_funcs` (TRL's convention), imported and checked
the same way by `rookworld train`'s checks before accelerate starts and by the GRPO stage.

    from rookworld_trl.grpo.rewards.own import import_reward
    func = import_reward("examples.my_reward.b_gives_check")   # UserError: one line naming the fix

A module that does not import (missing, a syntax error, an error it raises), a name that is not in it or not
callable, and a function TRL cannot call (it calls `f(prompts=..., completions=..., completion_ids=...,
trainer_state=..., **columns)`, every argument a keyword) are each one UserError naming the function and the fix.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

from rookworld_trl.common.errors import UserError

SIGNATURE = "def NAME(prompts, completions, **kwargs)"  # returns a float (or None) per completion
# what TRL 1.16's GRPOTrainer passes every reward function, besides each dataset column
TRL_KEYWORDS = ("prompts", "completions", "completion_ids", "trainer_state")


def is_own(name: str) -> bool:
    """Whether a reward_funcs entry names a function by its path ('pkg.mod.func' or 'pkg.mod:func') rather than
    a registry name."""
    return "." in name or ":" in name


def import_reward(path: str):
    """The function at a dotted path (or 'module:function'), checked as TRL will call it; UserError otherwise.
    The working directory is searched first, as `python -m` does for the stage."""
    module, _, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    if "/" in path or os.sep in path or attr == "py" or module.endswith(".py"):  # a file, not a function
        dotted = (path if attr == "py" else module).removesuffix(".py").replace(os.sep, ".").replace("/", ".")
        raise UserError(
            f"reward function {path!r}: name the function by its dotted path, not the file: "
            f"{dotted}.{'FUNCTION' if attr == 'py' else attr}, run from the folder that holds "
            f"{dotted.split('.')[0]}{'/' if '.' in dotted else '.py'} (or add that folder to PYTHONPATH)"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        func = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        top = (e.name or module).split(".")[0]
        raise UserError(
            f"reward function {path!r}: no module named {e.name or module!r} here ({os.getcwd()}) or on "
            f"PYTHONPATH; run from the folder that holds {top}.py (or {top}/), or add that folder to PYTHONPATH"
        ) from None
    except AttributeError:
        raise UserError(
            f"reward function {path!r}: module {module!r} has no {attr!r}; check the name after the last dot"
        ) from None
    except SyntaxError as e:
        where = f"{e.filename}:{e.lineno}" if e.filename else module
        raise UserError(f"reward function {path!r}: {where}: syntax error ({e.msg}); fix that line") from None
    except Exception as e:  # the module raised while importing: its own bug, in one line
        raise UserError(
            f"reward function {path!r}: importing {module!r} raised {type(e).__name__}: {e}; fix the module"
        ) from None
    check_signature(path, func)
    return func


def check_signature(path: str, func) -> None:
    """UserError when TRL could not call `func` with its keywords (TRL_KEYWORDS and the dataset's columns)."""
    if not callable(func):
        raise UserError(
            f"reward function {path!r} is not callable (it is the {type(func).__name__} {func!r}); name a "
            f"function: {SIGNATURE.replace('NAME', path.rpartition('.')[2])}"
        )
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin or C function without a signature: TRL will tell
        return
    # without **kwargs TRL's other keywords (completion_ids, trainer_state, the columns) raise a TypeError; a
    # required positional-only argument cannot be given by keyword at all (other required names may be columns)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if not takes_any or positional:
        shown = f"({', '.join(str(p) for p in params.values())})"
        name = getattr(func, "__name__", path.rpartition(".")[2])
        raise UserError(
            f"reward function {path!r} takes {shown}, but TRL calls it with the keywords prompts, completions "
            f"and each dataset column: define it as `{SIGNATURE.replace('NAME', name)}`, returning a float (or "
            "None) per completion (examples/my_reward.py)"
        )


def check_reward_names(names, weights=None, field_credit: bool = False) -> None:
    """Each reward_funcs entry: a registry name, or your own function that imports and that TRL can call; the
    same count of reward_weights; policy_reward among them for field credit. UserError otherwise (`rookworld
    train`'s checks and RookWorldGRPOTrainer's)."""
    from rookworld_trl.common.errors import did_you_mean
    from rookworld_trl.grpo.rewards.functions import REWARD_FUNCS

    names = list(names or [])
    for name in names:
        if is_own(name):
            import_reward(name)
        elif name not in REWARD_FUNCS:
            raise UserError(
                f"reward_funcs: unknown reward function {name!r}{did_you_mean(name, set(REWARD_FUNCS), prefix='')}; "
                f"the built-in ones are {', '.join(REWARD_FUNCS)}, or name your own by its dotted path "
                "(my_module.my_reward; examples/my_reward.py)"
            )
    check_reward_counts(names, weights, field_credit and "policy_reward" not in names)


def check_reward_counts(names, weights=None, credit_without_policy: bool = False) -> None:
    """UserError unless there is one weight per reward function and, for field credit, a policy reward."""
    if weights is not None and len(weights) != len(names):
        raise UserError(
            f"reward_weights has {len(weights)} entries for {len(names)} reward_funcs ({', '.join(names)}): "
            "give one weight per function, in the same order"
        )
    if credit_without_policy:
        raise UserError(
            "field_credit: true needs policy_reward among reward_funcs (it reads its components): add "
            "policy_reward, or set field_credit false"
        )


def name_of(func) -> str:
    """A reward entry's name as TRL logs it (a string as given, a function's __name__)."""
    return func if isinstance(func, str) else getattr(func, "__name__", type(func).__name__)


def resolve_rewards(funcs, shaping: str = "graduated", engine=None, weights=None, field_credit=False) -> list:
    """The reward functions a trainer is given, as TRL will call them: a registry name or a dotted path (a
    string) becomes its function; `policy_reward`/`env_reward` (the ready ones) are built with `shaping`
    (and `engine`); every function is checked as TRL calls it, and with check_reward_names. A built-in made by
    a factory with another shaping than `shaping` is a UserError (reward_shaping would silently not apply).
    A string with a '/' and no '.' (a hub reward model, 'owner/name') and a reward model are left to TRL."""
    from rookworld_trl.grpo.rewards.functions import REWARD_FUNCS, policy_grader

    funcs = [funcs] if isinstance(funcs, str) or callable(funcs) else list(funcs)
    out = []
    for func in funcs:
        if isinstance(func, str) and "/" in func and not is_own(func):
            out.append(func)  # TRL loads it as a reward model
        elif isinstance(func, str) and func in REWARD_FUNCS:
            out.append(REWARD_FUNCS[func](engine=engine, shaping=shaping))
        elif isinstance(func, str):
            check_reward_names([func])  # an unknown name: UserError with the built-in ones
            out.append(import_reward(func))
        elif hasattr(func, "forward") and hasattr(func, "config"):
            out.append(func)  # a reward model (PreTrainedModel): TRL calls it with token ids, not keywords
        elif getattr(func, "ready", False):
            out.append(REWARD_FUNCS[func.__name__](engine=engine, shaping=shaping))
        else:
            check_signature(name_of(func), func)
            built = getattr(func, "shaping", None)
            if built is not None and built != shaping and func.__name__ in REWARD_FUNCS:
                raise UserError(
                    f"reward_shaping is {shaping!r} but the {func.__name__} passed in was built with shaping "
                    f"{built!r}, which is what it applies: pass the ready {func.__name__} (it takes "
                    f"reward_shaping), or build it with make_{func.__name__}(shaping={shaping!r})"
                )
            out.append(func)
    check_reward_counts([name_of(f) for f in out], weights, field_credit and policy_grader(out) is None)
    return out
