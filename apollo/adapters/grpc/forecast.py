"""ForecastService: the forecast behind every decision, per node and for the cluster.

The bank keeps fixed quantile levels; a request's confidence is answered with the configured central
interval closest to it, and `confidence_level` says which one was served.

Unknown is never zero: a resource the node has no forecast for, and an accuracy not known yet, go out as
NaN (an explicit "unknown" any client can test), and the cluster aggregate averages only known values.
`forecast_mode` and `mode_reason` say whether the engine decides on this forecast or has fallen back to
current load.
"""

from __future__ import annotations

import math
import uuid

import grpc

from apollo.adapters.grpc.validation import require_valid
from apollo.adapters.grpc.wire import timestamp
from apollo.runtime.engine import Engine, EngineView
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from common.errors import NotFound
from common.grpc_status import domain_errors

MODEL_TYPE = "ets-damped-holt-winters mixed with last value and a slow mean (vectorised, empirical intervals)"
_FIELDS = {"cpu": "cpu_usage", "memory": "memory_usage", "disk_io": "io_usage", "network": "network_usage"}
NAN = math.nan


def model_accuracy(skill: float) -> float:
    """1 - skill: the forecast's skill score against last value on the same samples.

    0 = no better than repeating the last value, 1 = perfect, negative = worse than last value. NaN while
    unknown (never 0.0, which would read as "exactly as good as last value").
    """
    return 1.0 - skill if math.isfinite(skill) and skill >= 0 else NAN


def _mode(view: EngineView) -> int:
    return pb.FORECAST_MODE_REACTIVE if view.reactive else pb.FORECAST_MODE_PREDICTIVE


def node_prediction(
    engine: Engine, view: EngineView, node: str, horizon_minutes: int, confidence: float
) -> pb.ResourcePrediction | None:
    fc = view.forecast
    layout = view.layout
    i = layout.index.get(node)
    if fc is None or i is None or len(fc.keys) != len(layout.node_of_row):
        return None
    rows = {res: int(r[i]) for res, r in layout.rows.items() if r[i] >= 0}
    step = view.step_seconds
    h = min(fc.mean.shape[1], max(1, math.ceil(horizon_minutes * 60 / step)))
    # The bank keeps fixed quantiles; the central interval closest to the one asked for is served and
    # its real level reported in confidence_level.
    levels = fc.quantiles
    widths = [(levels[-1 - k] - levels[k], k) for k in range(len(levels) // 2)]
    width, lo_i = min(widths, key=lambda w: abs(w[0] - confidence))
    start = view.created_at
    pred = pb.ResourcePrediction(
        node_name=node,
        prediction_id=uuid.uuid4().hex,
        prediction_start=timestamp(start),
        prediction_end=timestamp(start + h * step),
        prediction_horizon_minutes=math.ceil(h * step / 60),
        confidence_level=round(width, 6),
        model_type=MODEL_TYPE + (" [reactive]" if view.reactive else ""),
        model_accuracy=model_accuracy(view.skill),
        created_at=timestamp(view.created_at),
        forecast_mode=_mode(view),  # type: ignore[arg-type]
        mode_reason=view.mode_reason,
    )
    table = view.table
    if table is not None and node in table.index:
        k = table.index[node]
        pred.anomaly_score = float(table.anomaly_score[k])
        pred.anomaly_detected = bool(table.anomaly[k])
        if pred.anomaly_detected:
            pred.anomaly_type = "abnormal-behaviour"
    sources = (fc.mean, fc.values[:, -1 - lo_i, :], fc.values[:, lo_i, :])
    for j in range(h):
        t = timestamp(start + (j + 1) * step)
        entries = (pred.predicted_usage.add(), pred.upper_bound.add(), pred.lower_bound.add())
        for entry, src in zip(entries, sources, strict=True):
            entry.timestamp.CopyFrom(t)
            for res, fieldname in _FIELDS.items():
                # Unknown stays unknown: a resource without a forecast, or a NaN step, is sent as NaN.
                value = float(src[rows[res], j]) if res in rows else NAN
                setattr(entry, fieldname, value if math.isfinite(value) else NAN)
    if view.scores is not None and node in view.index and bool(view.scores.overload[view.index[node]]):
        pred.recommendations.add(
            recommendation_type="migrate",
            description=view.scores.reasons[view.index[node]],
            priority=pb.POLICY_PRIORITY_HIGH,
            recommended_action_time=timestamp(view.created_at),
        )
    return pred


def _known_mean(values: list[float]) -> float:
    """Mean of the known values; NaN when none is known (an unknown node never counts as 0)."""
    known = [v for v in values if math.isfinite(v)]
    return sum(known) / len(known) if known else NAN


class ForecastServicer(pb_grpc.ForecastServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _defaults(self, horizon: int, confidence: float) -> tuple[int, float]:
        f = self.engine.settings.forecast
        return horizon or f.horizon_minutes, confidence or (2 * f.decision_quantile - 1)

    @domain_errors
    def GetResourcePrediction(
        self, request: pb.PredictionRequest, context: grpc.ServicerContext
    ) -> pb.ResourcePrediction:
        require_valid(request)
        horizon, confidence = self._defaults(request.horizon_minutes, request.confidence_level)
        pred = node_prediction(self.engine, self.engine.view, request.node_name, horizon, confidence)
        if pred is None:
            raise NotFound(f"no forecast for node {request.node_name!r}", field="node_name")
        return pred

    @domain_errors
    def GetClusterPrediction(
        self, request: pb.ClusterPredictionRequest, context: grpc.ServicerContext
    ) -> pb.ClusterPrediction:
        require_valid(request)
        horizon, confidence = self._defaults(request.horizon_minutes, request.confidence_level)
        view = self.engine.view
        nodes = list(request.node_filters) or list(view.index)
        reply = pb.ClusterPrediction(created_at=timestamp(view.created_at))
        for node in nodes:
            pred = node_prediction(self.engine, view, node, horizon, confidence)
            if pred is not None:
                reply.node_predictions.append(pred)
        if reply.node_predictions:
            agg = reply.aggregated_prediction
            first = reply.node_predictions[0]
            agg.node_name = "cluster"
            agg.prediction_id = uuid.uuid4().hex
            agg.prediction_start.CopyFrom(first.prediction_start)
            agg.prediction_end.CopyFrom(first.prediction_end)
            agg.prediction_horizon_minutes = first.prediction_horizon_minutes
            agg.confidence_level = first.confidence_level
            agg.model_type = first.model_type
            agg.model_accuracy = first.model_accuracy
            agg.created_at.CopyFrom(first.created_at)
            agg.forecast_mode = first.forecast_mode
            agg.mode_reason = first.mode_reason
            agg.anomaly_detected = any(p.anomaly_detected for p in reply.node_predictions)
            # Mean utilisation across the nodes whose value is known, per step (a cluster-wide fraction,
            # not a sum of fractions); NaN when no node's is.
            for series in ("predicted_usage", "upper_bound", "lower_bound"):
                steps = len(getattr(first, series))
                for j in range(steps):
                    out = getattr(agg, series).add()
                    out.timestamp.CopyFrom(getattr(first, series)[j].timestamp)
                    for fieldname in _FIELDS.values():
                        vals = [getattr(getattr(p, series)[j], fieldname) for p in reply.node_predictions]
                        setattr(out, fieldname, _known_mean(vals))
        return reply
