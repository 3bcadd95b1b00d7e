"""tfx_jax: how transferable are features in deep neural networks? (Yosinski et al. 2014) in JAX."""
