// IRC lines as the page reads and writes them: parsing with IRCv3 message tags (and their
// escaping), formatting, casefolding, the formatting codes in text (bold, colours, ...)
// and a nick's colour. No I/O and no DOM here.

const TAG_UNESCAPES = { ":": ";", s: " ", "\\": "\\", r: "\r", n: "\n" };
const TAG_ESCAPES = { ";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n" };

/** A tag value as sent (`a\sb`) read back (`a b`); an unknown escape is the letter. */
export function unescapeTag(value) {
  return value.replace(/\\(.?)/g, (_, c) => (c === "" ? "" : TAG_UNESCAPES[c] ?? c));
}

export function escapeTag(value) {
  return value.replace(/[; \\\r\n]/g, (c) => TAG_ESCAPES[c]);
}

/**
 * One IRC line: `{tags, source, nick, command, params}`. `source` is the prefix
 * (`nick!user@host` or a server name), `nick` the part before `!`.
 */
export function parse(line) {
  let rest = line;
  const tags = {};
  if (rest.startsWith("@")) {
    const space = rest.indexOf(" ");
    for (const item of rest.slice(1, space).split(";")) {
      if (!item) continue;
      const eq = item.indexOf("=");
      if (eq < 0) tags[item] = "";
      else tags[item.slice(0, eq)] = unescapeTag(item.slice(eq + 1));
    }
    rest = rest.slice(space + 1).trimStart();
  }
  let source = "";
  if (rest.startsWith(":")) {
    const space = rest.indexOf(" ");
    source = rest.slice(1, space < 0 ? undefined : space);
    rest = space < 0 ? "" : rest.slice(space + 1).trimStart();
  }
  const params = [];
  while (rest) {
    if (rest.startsWith(":")) {
      params.push(rest.slice(1));
      break;
    }
    const space = rest.indexOf(" ");
    if (space < 0) {
      params.push(rest);
      break;
    }
    params.push(rest.slice(0, space));
    rest = rest.slice(space + 1).trimStart();
  }
  const command = (params.shift() || "").toUpperCase();
  const bang = source.indexOf("!");
  const nick = bang < 0 ? source : source.slice(0, bang);
  return { tags, source, nick, command, params };
}

/** A line to send. The last parameter gets a ':' when it needs one; CR, LF and NUL
 * never reach the wire (they would end the line or be refused). */
export function format(command, params = [], tags = {}) {
  const clean = (s) => String(s).replace(/[\r\n\0]/g, " ");
  const words = [command, ...params.map(clean)];
  const last = words.length - 1;
  if (last > 0 && (words[last] === "" || words[last].includes(" ") || words[last].startsWith(":"))) {
    words[last] = ":" + words[last];
  }
  const tagText = Object.entries(tags)
    .map(([key, value]) => (value === "" || value === true ? key : `${key}=${escapeTag(String(value))}`))
    .join(";");
  return (tagText ? `@${tagText} ` : "") + words.join(" ");
}

/** Names compared as the server compares them (ISUPPORT CASEMAPPING). */
export function makeCasefold(mapping = "ascii") {
  if (mapping === "ascii") return (s) => s.replace(/[A-Z]+/g, (c) => c.toLowerCase());
  const strict = mapping === "strict-rfc1459";
  return (s) =>
    s.replace(/[A-Z[\]\\~]/g, (c) => {
      if (c === "[") return "{";
      if (c === "]") return "}";
      if (c === "\\") return "|";
      if (c === "~") return strict ? "~" : "^";
      return c.toLowerCase();
    });
}

/** Is `name` a room (by ISUPPORT CHANTYPES, '#' by default)? */
export function isRoom(name, chantypes = "#") {
  return name !== "" && chantypes.includes(name[0]);
}

/** `\x01ACTION waves\x01` -> `waves`; null for anything that is not an action. */
export function actionText(text) {
  const match = /^\x01ACTION(?: (.*?))?\x01?$/.exec(text);
  return match ? match[1] || "" : null;
}

/** One of 16 colour classes for a nick: the same nick always gets the same one. */
export function nickColour(folded) {
  let hash = 5381;
  for (let i = 0; i < folded.length; i++) hash = ((hash * 33) ^ folded.charCodeAt(i)) >>> 0;
  return `nc${hash % 16}`;
}

/**
 * Text with IRC formatting codes, as runs of plain text with the classes that style them:
 * `[{text, classes: ["b", "fg4"]}, ...]`. Bold \x02, italic \x1d, underline \x1f,
 * strike \x1e, monospace \x11, reverse \x16 (dropped), colours \x03fg[,bg] (0-15; the
 * rest and hex colours \x04 are dropped), reset \x0f. Other control characters go.
 */
export function formattedRuns(text) {
  const runs = [];
  const style = { b: false, i: false, u: false, s: false, m: false, fg: null, bg: null };
  let current = "";
  const flush = () => {
    if (!current) return;
    const classes = ["b", "i", "u", "s", "m"].filter((k) => style[k]);
    if (style.fg !== null && style.fg < 16) classes.push(`fg${style.fg}`);
    if (style.bg !== null && style.bg < 16) classes.push(`bg${style.bg}`);
    runs.push({ text: current, classes });
    current = "";
  };
  const toggles = { "\x02": "b", "\x1d": "i", "\x1f": "u", "\x1e": "s", "\x11": "m" };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (toggles[c]) {
      flush();
      style[toggles[c]] = !style[toggles[c]];
    } else if (c === "\x0f") {
      flush();
      Object.assign(style, { b: false, i: false, u: false, s: false, m: false, fg: null, bg: null });
    } else if (c === "\x03") {
      flush();
      const match = /^(\d{1,2})(?:,(\d{1,2}))?/.exec(text.slice(i + 1));
      if (!match) {
        style.fg = style.bg = null;
      } else {
        style.fg = Number(match[1]);
        if (match[2] !== undefined) style.bg = Number(match[2]);
        i += match[0].length;
      }
    } else if (c === "\x04") {
      const match = /^[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?/.exec(text.slice(i + 1));
      if (match) i += match[0].length;
    } else if (c < " " && c !== "\t") {
      // \x16 (reverse) and other controls: nothing to show.
    } else {
      current += c;
    }
  }
  flush();
  return runs;
}

/** The text without any formatting codes (for notifications, mentions and completion). */
export function plainText(text) {
  return formattedRuns(text)
    .map((run) => run.text)
    .join("");
}

/** `HH:MM` of a server-time tag (local time), or of now. */
export function clock(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** A UTF-8 string in base64 (SASL PLAIN). */
export function base64(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}
