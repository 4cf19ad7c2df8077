"""Contraceptive use in Bangladesh: a random intercept and urban slope per district.

Run ``python examples/contraception.py``.  Prints the summary with odds ratios, the
variance components, the districts with the largest random intercepts and the predicted
probability of use for a typical (random effects at zero) urban and rural woman.
"""

import pandas as pd

import bayesglmm as bg

df = bg.datasets.load("contraception")
model = bg.GLMM("use[Y] ~ age + I(age**2) + urban + livch + (1 + urban | district)", df, family="bernoulli")
print(model)
print(model.prior_summary().to_string(index=False))

res = model.fit(random_seed=1)
pd.set_option("display.width", 160)
print(res.summary().round(3))
print(res.varcorr().round(3))

re = res.ranef()
print("\nDistricts with the largest random intercepts:")
print(re[re["term"] == "Intercept"].sort_values("mean", ascending=False).head(5).round(3).to_string(index=False))

typical = pd.DataFrame({"age": [0.0, 0.0], "urban": ["Y", "N"], "livch": ["2", "2"], "district": ["1", "1"]})
print("\nTypical district (random effects at zero), age at the mean, two children:")
print(typical.join(res.predict(typical, re_formula="~0").round(3)).to_string(index=False))
