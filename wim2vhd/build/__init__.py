"""`wim2vhd build RECIPE.toml`: a matrix of disks from one reviewable file, with a manifest.

    recipe.py    the TOML recipe: keys, values and the line of each, checked (RecipeError, exit 2)
    jobs.py      the matrix as jobs with stable ids (sources opened for their editions, options checked)
    manifest.py  the manifest: hashes, up-to-date checks, merging the manifests of a fanned-out build
    runner.py    N jobs at once, each in a process of its own (worker.py)
    pipeline.py  build, list_jobs, merge_manifests, check: what wim2vhd.api calls
"""
