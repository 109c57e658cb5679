import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Never let juliacall/juliapkg download anything during tests.
os.environ.setdefault("PYTHON_JULIAPKG_OFFLINE", "yes")
