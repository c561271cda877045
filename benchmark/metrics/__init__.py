"""Evaluation metrics as compare_gan v2 computed them: FID, KID and Inception Score.

`extractor` finds, checks and loads the TF Inception (2015-12-05) network.
`features` turns images into its pool_3 features and logits, with the TF1
bilinear resize from `resize`. `fid`, `kid` and `inception_score` compute the
metrics from features or logits.
"""
