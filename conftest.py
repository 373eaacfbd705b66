# Check cells of the (clean) notebooks compare against outputs pinned in their metadata.
pytest_plugins = ("colorkit.nbcheck",)
