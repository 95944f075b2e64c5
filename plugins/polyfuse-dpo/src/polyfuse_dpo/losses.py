"""The preference losses of DPO and its variants, as pure functions of log-probabilities.

For a pair (s, a_w preferred to a_l), the policy pi and the reference
pi_ref, the implicit rewards are ``r(a) = beta * (log pi(a|s) - log pi_ref(a|s))``
and the preference logit is ``h = r(a_w) - r(a_l)``:

- ``dpo`` (Rafailov et al. 2023): ``-log sigmoid(h)``, the Bradley-Terry
  negative log-likelihood of the preference under the implicit rewards;
- ``conservative`` (cDPO, Mitchell 2023): the same with each label flipped
  with probability ``e``: ``-(1 - e) log sigmoid(h) - e log sigmoid(-h)``,
  minimised at the finite ``h = log((1 - e) / e)`` instead of at infinity;
- ``ipo`` (Azar et al. 2023): ``(h / beta - 1 / (2 beta))^2``, a squared
  error that pulls the log-ratio margin ``h / beta`` to ``1 / (2 beta)`` and
  no further, so deterministic preferences cannot drive it to infinity.
"""

from __future__ import annotations

import torch
from torch.nn import functional

LOSSES = ("dpo", "ipo", "conservative")


def action_log_probs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``(B,)`` log-probability of ``actions`` (``(B,)`` zero-based indices) under the categorical of ``logits`` ``(B, n)``."""
    return functional.log_softmax(logits, dim=-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def implicit_rewards(log_probs: torch.Tensor, reference_log_probs: torch.Tensor, beta: float) -> torch.Tensor:
    """``beta * (log pi(a|s) - log pi_ref(a|s))``, DPO's reward for an action (up to a per-state constant)."""
    return beta * (log_probs - reference_log_probs)


def preference_logits(
    chosen_log_probs: torch.Tensor,
    rejected_log_probs: torch.Tensor,
    reference_chosen_log_probs: torch.Tensor,
    reference_rejected_log_probs: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """``h = beta * [(log pi(a_w) - log pi_ref(a_w)) - (log pi(a_l) - log pi_ref(a_l))]``, per pair."""
    return implicit_rewards(chosen_log_probs, reference_chosen_log_probs, beta) - implicit_rewards(
        rejected_log_probs, reference_rejected_log_probs, beta
    )


def preference_loss(h: torch.Tensor, beta: float, loss: str = "dpo", label_smoothing: float = 0.0) -> torch.Tensor:
    """The per-pair loss of ``loss`` (``dpo``, ``ipo`` or ``conservative``) at preference logits ``h``.

    ``label_smoothing`` is cDPO's ``e`` and is read by ``conservative`` only
    (which, at ``e = 0``, is ``dpo``).
    """
    if loss == "dpo":
        return -functional.logsigmoid(h)
    if loss == "conservative":
        return -(1.0 - label_smoothing) * functional.logsigmoid(h) - label_smoothing * functional.logsigmoid(-h)
    if loss == "ipo":
        return (h / beta - 1.0 / (2.0 * beta)) ** 2
    raise ValueError(f"unknown preference loss {loss!r}; expected one of {LOSSES}")
