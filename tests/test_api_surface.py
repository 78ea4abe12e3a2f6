import edgekit

PUBLIC = {
    "BenchResult", "BuildOptions", "BuildRecord", "BuildResult", "NasOptions", "NasResult", "Data", "DeviceProfile",
    "EdgekitError", "GateFailed", "IOSpec", "LmBuildResult", "LmRecord", "Model",
    "Split", "StageError", "TensorSpec", "UsageError", "ValidationFailed", "bench_file", "build",
    "list_profiles", "load_model", "load_profile", "nas", "prepare", "read_arrays", "__version__",
    "bench_on_device", "open_device",
}


def test_public_names_are_pinned():
    assert set(edgekit.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(edgekit, name), name


def test_exit_codes():
    assert edgekit.UsageError.exit_code == 2
    assert edgekit.GateFailed.exit_code == 1
    assert edgekit.StageError("x", "y").exit_code == 3
    assert "stage 'x' failed" in str(edgekit.StageError("x", "y"))
