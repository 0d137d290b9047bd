// The input line: Enter sends, Up/Down walk through what was sent, Tab completes nicks
// (cycling; `nick: ` at the start of the line), room names and command names, and the
// hint under it shows a /command's syntax from the server's slash table as it is typed.

const MAX_HISTORY = 100;

export class InputLine {
  /**
   * `app` gives: `commands()` (rows {name, syntax, summary}), `nicksHere()`, `roomNames()`,
   * `submit(line)` and `typed(value)` (for typing notifications).
   */
  constructor(app, input, hint) {
    this.app = app;
    this.input = input;
    this.hint = hint;
    this.history = [];
    this.position = 0;
    this.draft = "";
    this.completion = null;
    input.addEventListener("keydown", (event) => this.keydown(event));
    input.addEventListener("input", () => {
      this.completion = null;
      this.showHint();
      this.app.typed(this.input.value);
    });
  }

  keydown(event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.key === "Shift") return;
    if (event.key === "Tab" && this.input.value) {
      event.preventDefault();
      this.complete(event.shiftKey ? -1 : 1);
      return;
    }
    if (event.key !== "Tab") this.completion = null;
    if (event.key === "Enter") {
      event.preventDefault();
      const line = this.input.value;
      if (!line.trim()) return;
      this.remember(line);
      this.set("");
      this.app.submit(line);
    } else if (event.key === "ArrowUp" && this.position > 0) {
      event.preventDefault();
      if (this.position === this.history.length) this.draft = this.input.value;
      this.position--;
      this.set(this.history[this.position]);
    } else if (event.key === "ArrowDown" && this.position < this.history.length) {
      event.preventDefault();
      this.position++;
      this.set(this.position === this.history.length ? this.draft : this.history[this.position]);
    }
  }

  remember(line) {
    if (this.history[this.history.length - 1] !== line) this.history.push(line);
    if (this.history.length > MAX_HISTORY) this.history.shift();
    this.position = this.history.length;
    this.draft = "";
  }

  set(value) {
    this.input.value = value;
    this.input.setSelectionRange(value.length, value.length);
    this.showHint();
  }

  /** Put a line that was refused back, unless something new has been typed since. */
  restore(line) {
    if (!this.input.value) this.set(line);
  }

  /** Tab: the word before the caret, completed; again: the next candidate. */
  complete(step) {
    const value = this.input.value;
    let state = this.completion;
    if (!state || value !== state.produced) {
      const caret = this.input.selectionStart ?? value.length;
      const start = value.lastIndexOf(" ", caret - 1) + 1;
      const word = value.slice(start, caret);
      const candidates = this.candidates(word, start === 0);
      if (!candidates.length) return;
      state = { start, end: caret, candidates, index: step > 0 ? -1 : 0, before: value };
    }
    const n = state.candidates.length;
    state.index = (state.index + step + n) % n;
    const chosen = state.candidates[state.index];
    const head = state.before.slice(0, state.start) + chosen;
    const tail = state.before.slice(state.end).replace(/^ /, "");
    const value2 = `${head} ${tail}`;
    this.input.value = value2;
    this.input.setSelectionRange(head.length + 1, head.length + 1);
    state.produced = value2;
    this.completion = state;
    this.showHint();
  }

  candidates(word, atStart) {
    const lower = word.toLowerCase();
    if (atStart && word.startsWith("/")) {
      const names = this.app.commands().map((row) => `/${row.name}`);
      return [...new Set(names)].filter((name) => name.startsWith(lower)).sort();
    }
    if (word.startsWith("#")) {
      return this.app.roomNames().filter((name) => name.toLowerCase().startsWith(lower));
    }
    if (!word) return [];
    const nicks = this.app.nicksHere().filter((nick) => nick.toLowerCase().startsWith(lower));
    return atStart ? nicks.map((nick) => `${nick}:`) : nicks;
  }

  /** The syntax of the /command being typed, or the commands its start could be. */
  showHint() {
    const value = this.input.value;
    this.hint.classList.remove("error");
    if (!value.startsWith("/")) {
      this.hint.textContent = "";
      return;
    }
    const [typedName, ...rest] = value.slice(1).split(" ");
    const name = typedName.toLowerCase();
    const rows = this.app.commands();
    const starts = rest.length ? [] : rows.filter((row) => row.name.startsWith(name));
    const row = rows.find((r) => r.name === name) || (starts.length === 1 ? starts[0] : null);
    if (row && (rest.length || starts.length <= 1 || row.name === name)) {
      this.hint.textContent = `/${row.name} ${row.syntax}`.trimEnd() + ` — ${row.summary}`;
    } else if (starts.length) {
      this.hint.textContent = starts.map((r) => `/${r.name}`).join("  ");
    } else {
      this.hint.textContent = `/${name}: no such command (/help lists them)`;
    }
  }

  /** A refusal for what was just sent, where the syntax hint goes. */
  showError(text) {
    this.hint.textContent = text;
    this.hint.classList.add("error");
  }
}
