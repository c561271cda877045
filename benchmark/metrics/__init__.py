"""Evaluation metrics: FID, KID and Inception Score as compare_gan v2 computed them.

`extractor` finds, checks and loads the TF Inception (2015-12-05) network.
`features` turns images into its pool_3 features and logits, with the TF1
bilinear resize from `resize`. `fid`, `kid` and `inception_score` compute the
metrics from features or logits. `precision_recall` adds improved precision
and recall (Kynkäänniemi et al. 2019), which compare_gan did not compute.
"""
