"""A credit-scoring model: logistic regression over a few numeric features.

``execute`` standardises each feature with the configured means and scales,
applies the weights, and returns the probability of default, a 300-850
score, a decision and the contribution of every feature (so a caller can
explain the decision). Weights, means, scales, bias and the approval
threshold can all be overridden with the model's ``options``.
"""

import math

# Trained offline on a synthetic portfolio; positive weight = more risk.
DEFAULT_WEIGHTS = {
    "age": -0.35,
    "income": -0.80,
    "debt": 0.95,
    "late_payments": 0.70,
    "credit_years": -0.45,
}
DEFAULT_MEANS = {"age": 41.0, "income": 52000.0, "debt": 14000.0, "late_payments": 1.2, "credit_years": 9.0}
DEFAULT_SCALES = {"age": 12.0, "income": 21000.0, "debt": 11000.0, "late_payments": 1.6, "credit_years": 6.5}


class CreditScorer:
    """Probability of default and a 300-850 credit score from applicant features."""

    inputs = {
        "age": "number",
        "income": "number",
        "debt": "number",
        "late_payments": "integer",
        "credit_years": "number",
    }
    outputs = {
        "probability_of_default": "number",
        "score": "integer",
        "decision": "string",
        "contributions": "object",
    }

    def __init__(self, options=None):
        options = options or {}
        self.weights = dict(DEFAULT_WEIGHTS, **options.get("weights", {}))
        self.means = dict(DEFAULT_MEANS, **options.get("means", {}))
        self.scales = dict(DEFAULT_SCALES, **options.get("scales", {}))
        self.bias = float(options.get("bias", -1.4))
        self.threshold = float(options.get("threshold", 0.2))
        for name, scale in self.scales.items():
            if scale <= 0:
                raise ValueError("scale of %r must be > 0" % name)

    def execute(self, msg):
        if msg["age"] < 18:
            raise ValueError("applicant must be an adult (age >= 18)")
        if msg["income"] < 0 or msg["debt"] < 0:
            raise ValueError("income and debt must be >= 0")
        contributions = {}
        z = self.bias
        for name, weight in self.weights.items():
            value = float(msg.get(name, self.means[name]))
            c = weight * (value - self.means[name]) / self.scales[name]
            contributions[name] = round(c, 4)
            z += c
        p = 1.0 / (1.0 + math.exp(-z))
        return {
            "probability_of_default": round(p, 6),
            "score": int(round(850 - 550 * p)),
            "decision": "approve" if p < self.threshold else "review",
            "contributions": contributions,
        }
