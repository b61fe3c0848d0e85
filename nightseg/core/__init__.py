"""The core every layer may use: errors, atomic files, the commands' error handling, paths, class
tables, scores and image helpers. It imports no other part of nightseg."""
