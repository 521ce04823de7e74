#!/usr/bin/env bash
# Mutation testing of winnow's pure modules with mutmut: prints the score per module.
#
#   bash scripts/mutation.sh                  # every module of the table (about an hour on 2 cores)
#   bash scripts/mutation.sh select records   # some of them
#   MUTATION_JOBS=1 bash scripts/mutation.sh  # fewer worker processes (default 2)
#
# Each module is mutated against its own fast unit tests only (the table below), in a
# scratch copy under .mutation/<module>/, so runs of different modules share no state and
# the worktree is never touched. Score = killed / (all mutants - the equivalent ones listed
# in scripts/mutation-equivalent.md); a timeout counts as killed. Survivors are printed as
# `mutmut show NAME` commands, to run in .mutation/<module>/.
#
# Pure modules only: the code sandbox (verifiers/code.py, sandbox.py, cgroups.py) spawns and
# kills processes, so each mutant would cost seconds of process start-up and the run hours.
# A table entry may deselect a test (`--deselect=FILE::TEST`) that is slow and adds no kill.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-$root/.venv/bin/python}
jobs=${MUTATION_JOBS:-2}
"$python" -c "import mutmut" 2>/dev/null || "$python" -m pip install -q "mutmut==3.8.0"

# module -> the file mutated and the tests it is mutated against (the one table)
declare -A file=(
  [select]=winnow/select.py
  [records]=winnow/records.py
  [rundir]=winnow/rundir.py
  [report]=winnow/report/stats.py
  [prompts]=winnow/prompts.py
  [config]=winnow/config/fields.py
  [answers]=winnow/answers.py
  [passk]=winnow/report/passk.py
  [votes]=winnow/report/votes.py
  [verifiers]=winnow/verifiers/__init__.py
  [exact]=winnow/verifiers/exact.py
  [choice]=winnow/verifiers/choice.py
  [reasoning]=winnow/verifiers/reasoning.py
  [math]=winnow/verifiers/math.py
  [text]=winnow/verifiers/text.py
  [sentences]=winnow/verifiers/sentences.py
  [ifeval]=winnow/verifiers/ifeval.py
)
declare -A tests=(
  [select]="tests/test_select.py tests/test_rso_pairs.py tests/test_verified_select.py"
  [records]="tests/test_records.py tests/test_rundir_unit.py"
  [rundir]="tests/test_rundir_unit.py"
  [report]="tests/report/test_stats.py"
  [prompts]="tests/test_prompts.py tests/test_prompts_messages.py"
  [config]="tests/config/test_config.py tests/config/test_bounds.py tests/config/test_fields.py winnow/config/fields.py"
  [answers]="tests/test_answers.py"
  [passk]="tests/report/test_passk.py --deselect=tests/report/test_passk.py::test_report_with_pass_threshold
    --deselect=tests/report/test_passk.py::test_report_command_takes_pass_threshold"
  [votes]="tests/report/test_votes.py"
  [verifiers]="tests/verifiers/test_verifiers.py"
  [exact]="tests/verifiers/test_verifiers.py"
  [choice]="tests/verifiers/test_verifiers.py tests/verifiers/test_choice.py"
  [reasoning]="tests/verifiers/test_verifiers.py"
  [math]="tests/verifiers/test_verifiers.py tests/verifiers/test_math.py
    --deselect=tests/verifiers/test_math.py::test_every_case_gets_its_known_verdict"
  [text]="tests/verifiers/test_text.py tests/verifiers/test_ifeval.py --deselect=tests/verifiers/test_ifeval.py::test_a_bad_row_through_winnow_score_is_one_line_and_exit_2
    --deselect=tests/verifiers/test_ifeval.py::test_a_prompts_file_without_ifevals_columns_through_winnow_score"
  [sentences]="tests/verifiers/test_ifeval.py --deselect=tests/verifiers/test_ifeval.py::test_a_bad_row_through_winnow_score_is_one_line_and_exit_2
    --deselect=tests/verifiers/test_ifeval.py::test_a_prompts_file_without_ifevals_columns_through_winnow_score"
  [ifeval]="tests/verifiers/test_ifeval.py --deselect=tests/verifiers/test_ifeval.py::test_a_bad_row_through_winnow_score_is_one_line_and_exit_2
    --deselect=tests/verifiers/test_ifeval.py::test_a_prompts_file_without_ifevals_columns_through_winnow_score"
)
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(select records rundir report prompts config answers passk votes
  verifiers exact choice reasoning math text sentences ifeval)

summary=()
for module in "${modules[@]}"; do
  [ -n "${file[$module]:-}" ] || { echo "unknown module '$module' (one of: ${!file[*]})" >&2; exit 2; }
  path=${file[$module]}
  dotted=${path%.py}
  dotted=${dotted//\//.}
  work=$root/.mutation/$module
  rm -rf "$work"
  mkdir -p "$work"
  # the package, tests and pyproject as they are in the worktree now, new files included
  git ls-files --cached --others --exclude-standard winnow tests pyproject.toml | while read -r f; do
    [ -f "$f" ] && mkdir -p "$work/$(dirname "$f")" && cp "$f" "$work/$f"
  done
  # mutmut 3.8 reads item._nodeid, which pytest 9 no longer has: give it back, in the copy only
  printf '\n\nimport _pytest.nodes  # noqa: E402\n\n_pytest.nodes.Node._nodeid = property(lambda self: self.nodeid)\n' \
    >>"$work/tests/conftest.py"
  selection=$(printf '"%s", ' ${tests[$module]})
  cat >>"$work/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["winnow"]
only_mutate = ["$path"]
pytest_add_cli_args = ["-p", "no:cacheprovider"]
pytest_add_cli_args_test_selection = [$selection]
use_git_change_detection = false
EOF
  echo "== mutmut on $path against ${tests[$module]}"
  start=$(date +%s)
  # mutmut stops with an error when no selected test reaches the module: then every
  # mutant counts as a survivor, which is what it is.
  if ! (cd "$work" && "$python" -m mutmut run --max-children "$jobs" >mutmut.log 2>&1) &&
    ! grep -q "could not find any test case" "$work/mutmut.log"; then
    tail -30 "$work/mutmut.log" >&2
    echo "mutmut failed on $module; log in $work/mutmut.log" >&2
    exit 1
  fi
  line=$(cd "$work" && "$python" "$root/scripts/mutation_score.py" "$module" "$dotted" \
    "$root/scripts/mutation-equivalent.md" "$(($(date +%s) - start))")
  echo "$line"
  summary+=("$line")
done

echo
echo "module      killed / scored   score   equivalent   survivors   seconds"
printf '%s\n' "${summary[@]}"
