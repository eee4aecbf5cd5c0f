# Two entry points (README.md): `make notebooks` (the main job) and `make test` (the suite); `make docs`
# builds the documentation site. All create .venv with the package and its extras; nothing else is
# needed but Python >= 3.10.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= build/notebooks
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: env notebooks test docs docs-check clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[notebooks,dev,docs]"
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $@

# Execute every numbered notebook on its embedded defaults; executed copies go to $(OUT),
# figures to figures/.
notebooks: env
	@mkdir -p $(OUT) figures
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  $(BIN)/papermill --cwd notebooks --kernel python3 --execution-timeout 1800 "$$nb" "$(OUT)/$$(basename $$nb)" || exit 1; \
	done
	@echo "executed notebooks in $(OUT); figures in figures/"

# Unit tests and notebooks (executed with papermill into a temporary folder).
test: env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The documentation site (mkdocs.yml) in build/site, from the executed notebooks in $(OUT) (a notebook
# without an executed copy newer than itself is executed first), the API reference from the docstrings,
# README and RESULTS.
EXECUTED := $(patsubst notebooks/%,$(OUT)/%,$(NOTEBOOKS))

$(OUT)/%.ipynb: notebooks/%.ipynb | env
	@mkdir -p $(OUT) figures
	$(BIN)/papermill --cwd notebooks --kernel python3 --execution-timeout 1800 $< $@

docs: env $(EXECUTED)
	NO_MKDOCS_2_WARNING=1 LOCALMAMBA_DOCS_NOTEBOOKS=$(OUT) $(BIN)/mkdocs build --strict
	@echo "open build/site/index.html"

# CI's check of the site: the same strict build from the committed notebooks (no outputs, no execution).
docs-check: env
	NO_MKDOCS_2_WARNING=1 LOCALMAMBA_DOCS_NOTEBOOKS=notebooks $(BIN)/mkdocs build --strict --quiet \
	  --site-dir build/site-check

clean:
	rm -rf $(VENV) build .pytest_cache
