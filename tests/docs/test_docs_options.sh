#!/usr/bin/env bash
# Keeps docs/programs.md honest: for every program in $KMIM_BIN_DIR, every option its --help
# lists must be documented in that program's section of docs/programs.md ("## <program>"), and
# the options every program shares (--help, --version, --config: the "General:" block of --help)
# in the section "## Common to every program". The reverse holds too: an option in the first
# column of a program's option table that its --help does not list is a stale entry.
# Fails naming every missing or stale option; skips (77) when no program has been built.
set -u
doc="$KMIM_SOURCE_DIR/docs/programs.md"
tmp="$KMIM_TEST_TMP"; rm -rf "$tmp"; mkdir -p "$tmp"
[ -f "$doc" ] || { echo "FAIL: $doc does not exist"; exit 1; }

# Lines of the section "## <title>" of programs.md (up to the next "## " heading).
section() {
  awk -v t="$1" '
    /^## / { inside = ($0 == "## " t || $0 == "## `" t "`"); next }
    inside { print }' "$doc"
}
# The options an --help text defines: "  --name ..." (two spaces: Boost's layout; wrapped
# descriptions are indented further), one block per "Options:"/"General:" heading.
# Prints "<block> <name>".
help_options() {
  awk '
    /^[A-Za-z][^:]*:[[:space:]]*$/ { block = ($0 ~ /^General:/) ? "general" : "program"; next }
    /^  --[a-z0-9]/ {
      match($0, /--[a-z0-9][a-z0-9-]*/)
      print block, substr($0, RSTART + 2, RLENGTH - 2)
    }' "$1"
}
# Does the text on stdin mention --<name> as a whole option name?
mentions() { grep -Eq -- "--$1([^a-z0-9-]|\$)"; }

common="$(section 'Common to every program')"
[ -n "$common" ] || { echo "FAIL: $doc has no section '## Common to every program'"; exit 1; }

failures=0 programs=0
for bin in "$KMIM_BIN_DIR"/*; do
  [ -f "$bin" ] && [ -x "$bin" ] || continue
  name="$(basename "$bin")"
  programs=$((programs + 1))
  if ! timeout 60 "$bin" --help >"$tmp/$name.help" 2>"$tmp/$name.err"; then
    echo "FAIL: $name --help did not exit 0:"; cat "$tmp/$name.err"
    failures=$((failures + 1)); continue
  fi
  help_options "$tmp/$name.help" >"$tmp/$name.options"
  if ! grep -q '^program ' "$tmp/$name.options" || ! grep -q '^general ' "$tmp/$name.options"; then
    echo "FAIL: $name --help: found no options to check (did the --help layout change?)"
    cat "$tmp/$name.help"; failures=$((failures + 1)); continue
  fi
  text="$(section "$name")"
  if [ -z "$text" ]; then
    echo "FAIL: $name has no section '## $name' in docs/programs.md"
    failures=$((failures + 1)); continue
  fi
  missing=()
  while read -r block option; do
    if [ "$block" = general ]; then
      mentions "$option" <<<"$common" || missing+=("--$option (in 'Common to every program')")
    else
      mentions "$option" <<<"$text" || missing+=("--$option")
    fi
  done <"$tmp/$name.options"
  # Stale rows: options named in the first column of the section's tables.
  stale=()
  while read -r option; do
    grep -qx "program $option" "$tmp/$name.options" || stale+=("--$option")
  done < <(printf '%s\n' "$text" | awk -F'|' '/^\| *`--/ { print $2 }' |
           grep -Eo -- '--[a-z0-9][a-z0-9-]*' | sed 's/^--//' | sort -u)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "FAIL: $name: options of --help not documented in docs/programs.md: ${missing[*]}"
    failures=$((failures + 1))
  fi
  if [ ${#stale[@]} -gt 0 ]; then
    echo "FAIL: $name: docs/programs.md documents options --help does not list: ${stale[*]}"
    failures=$((failures + 1))
  fi
  [ ${#missing[@]} -eq 0 ] && [ ${#stale[@]} -eq 0 ] &&
    echo "ok: $name ($(wc -l <"$tmp/$name.options") options documented)"
done

if [ "$programs" -eq 0 ]; then
  echo "SKIPPED: no programs built in '$KMIM_BIN_DIR'"; exit 77
fi
[ "$failures" -eq 0 ] || { echo "FAIL: $failures problem(s) in docs/programs.md"; exit 1; }
echo "PASS: $programs programs, every option documented"
