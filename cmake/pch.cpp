// Empty translation unit: carries the precompiled torch header that every beitv2 target reuses.
