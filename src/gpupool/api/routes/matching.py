"""Matchmaking for coordinators (SPEC §3.3): ``/v1/match`` and ``/v1/feedback``."""

from __future__ import annotations

from fastapi import APIRouter

from gpupool.api.deps import CoordinatorDep, HubDep, RateLimitDep
from gpupool.api.schemas_registry import CandidateOut, FeedbackIn, FeedbackOut, MatchIn, MatchOut
from gpupool.core import matching
from gpupool.core.units import tokens_from_micro

router = APIRouter(prefix="/v1", tags=["matching"])


@router.post("/match", response_model=MatchOut, dependencies=[RateLimitDep])
async def match(body: MatchIn, hub: HubDep, _coordinator: CoordinatorDep) -> MatchOut:
    h = body.hints
    result = hub.matchmaking.match(
        body.job_id,
        matching.Requirements.from_mapping(body.requirements.model_dump()),
        matching.Hints(region=h.region, max_price=h.max_price_micro, deadline_ms=h.deadline_ms),
        body.top_k,
    )
    return MatchOut(
        job_id=body.job_id,
        candidates=[
            CandidateOut(
                miner_id=c.miner_id,
                addr=c.addr,
                proto=c.proto,
                score=c.score,
                eta_ms=c.eta_ms,
                price=tokens_from_micro(c.price),
                price_micro=c.price,
                explain=c.explain,
            )
            for c in result.candidates
        ],
        explain=result.explain,
        rejected=dict(result.rejected),
    )


@router.post("/feedback", response_model=FeedbackOut)
async def feedback(body: FeedbackIn, hub: HubDep, _coordinator: CoordinatorDep) -> FeedbackOut:
    result = await hub.matchmaking.feedback(body.job_id, body.miner_id, body.outcome, body.latency_ms)
    return FeedbackOut(
        miner_id=result.miner_id, trust=result.trust, latency_ms=result.latency_ms, applied=result.applied
    )
