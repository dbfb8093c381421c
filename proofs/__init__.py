"""proofs: sympy derivations of the power-mean theorems and the claims ledger."""
