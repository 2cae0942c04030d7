"""How a blessed candidate goes onto the endpoint, decided from what the endpoint API says it serves.

At most two deployed models, ever: the champion, and a canary only while it bakes (each deployed
model is billed for its node whether or not it takes traffic). So:
- nothing deployed: the candidate goes straight to 100 % (the first deployment);
- one model deployed: the candidate deploys beside it at the canary share, the champion keeping
  the rest, and bakes;
- two deployed: another run's canary is baking; this candidate is not deployed (its run ends
  rejected, saying so), rather than a third billed model or a bake cut short.
A canary is deployed only beside the champion the trainer scored it with: when another model has
become the champion since (or one appeared), the gate's verdict does not hold for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from functions.platform import EndpointState

# The registry aliases that follow the model at 100 % (Vertex's "default" is the version used
# when none is named; "champion" is the name the gate and the users look for).
SERVING_ALIASES = ("champion", "default")
NEW_MODEL = "0"  # a deployModel split's key for the model being deployed


@dataclass(frozen=True)
class DeployPlan:
    kind: str  # "first" | "canary" | "" (refused)
    split: dict[str, int] = field(default_factory=dict)
    champion_id: str | None = None
    refusal: str = ""


def plan_deploy(endpoint: EndpointState, canary_percent: int) -> DeployPlan:
    """The deployModel split for a blessed candidate, or why it must not be deployed now."""
    if not endpoint.deployed:
        return DeployPlan("first", {NEW_MODEL: 100})
    if len(endpoint.deployed) > 1:
        ids = ", ".join(d.id for d in endpoint.deployed)
        return DeployPlan("", refusal=f"the endpoint already holds two deployed models ({ids}): a canary is "
                                      "baking; start the run again after its release")
    (champion,) = endpoint.deployed
    return DeployPlan("canary", {NEW_MODEL: canary_percent, champion.id: 100 - canary_percent}, champion.id)


def champion_changed(compared_uri: str | None, serving_uri: str | None) -> str:
    """Why the gate's verdict does not hold beside the champion serving now ("" when it does): the
    trainer scored the candidate with the model `compared_uri` names (a version or its artifacts;
    None: none), and the endpoint's champion is `serving_uri` (named the same way)."""
    def same(uri: str | None) -> str | None:
        return None if uri is None else uri.rstrip("/")

    if same(compared_uri) == same(serving_uri):
        return ""
    compared = f"the champion {compared_uri}" if compared_uri else "no champion"
    return (f"the gate compared the candidate with {compared}, but the endpoint's champion is now "
            f"{serving_uri}: start the run again to be judged against it")
