"""Layer criticality (Zhang, Bengio and Singer 2019, "Are all layers created
equal?"): a trained network evaluated with one group of layers reset, to its
own initial values (re-initialisation) or to fresh random ones
(re-randomisation). One evaluation per group and kind; nothing is trained.
A group whose reset costs little accuracy holds little of what the network
learnt for its task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from tfx_jax.models import surgery


def reset(trained: Mapping, source: Mapping, groups: Sequence[str]) -> dict:
  """`trained` variables (every collection) with the paths of `groups` taken
  from `source` (its initial variables, or a fresh initialisation)."""
  paths = [path for group in groups for path in group.split('+')]
  return surgery.transplant_variables(trained, source, paths)


def criticality(evaluate: Callable[[Mapping], float], trained: Mapping, initial: Mapping,
                fresh: Mapping, groups: Sequence[str]) -> dict[str, dict[str, float]]:
  """{group: {'trained', 'reinit', 'rerandom'}}: `evaluate(variables)` (a
  top-1, say) of the trained network, and with that group reset to `initial`
  and to `fresh` (another draw of the initialiser)."""
  base = evaluate(trained)
  return {group: {'trained': base,
                  'reinit': evaluate(reset(trained, initial, [group])),
                  'rerandom': evaluate(reset(trained, fresh, [group]))}
          for group in groups}
