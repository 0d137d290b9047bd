// What the page knows, without the DOM: the conversations (the server view, rooms and
// private chats), each with its lines in time order (deduplicated by msgid), members,
// topic, unread count and who is typing.

/** How long a `+typing=active` lasts without another (IRCv3 typing: 6 s; paused: 30 s). */
export const TYPING_ACTIVE_MS = 6000;
export const TYPING_PAUSED_MS = 30000;
/** Lines kept per conversation on the page; older ones are dropped from memory. */
const MAX_LINES = 2000;

export const SERVER = "*";

export class Conversation {
  /** kind: "server" | "room" | "private". */
  constructor(target, kind) {
    this.target = target;
    this.kind = kind;
    this.lines = [];
    this.msgids = new Set();
    this.members = new Map(); // folded nick -> {nick, prefixes}
    this.topic = "";
    this.unread = 0;
    this.mention = false;
    this.joined = kind !== "room";
    this.typing = new Map(); // nick -> time it expires (ms)
    this.historyDone = kind === "server";
    this.historyPending = false;
    /** The oldest line /clear took away, if any (`oldest`). */
    this.cleared = null;
  }

  /** False for a line that is here already (the same msgid). */
  isNew(line) {
    if (!line.msgid) return true;
    if (this.msgids.has(line.msgid)) return false;
    this.msgids.add(line.msgid);
    return true;
  }

  /**
   * A line arriving now ({kind, time: Date, nick, text, msgid, self}): after every line
   * not newer. Its index in `lines`, or -1 if it is here already.
   */
  add(line) {
    if (!this.isNew(line)) return -1;
    let at = this.lines.length;
    while (at > 0 && this.lines[at - 1].time > line.time) at--;
    this.lines.splice(at, 0, line);
    return at - this.trim();
  }

  /**
   * Lines of history, in the server's order. Many lines share a millisecond, so time alone
   * cannot place them: each goes before the lines here of its time or later, and after
   * the batch's lines before it. How many were new.
   */
  addHistory(lines) {
    let floor = 0;
    let added = 0;
    for (const line of lines) {
      if (!this.isNew(line)) continue;
      let at = floor;
      while (at < this.lines.length && this.lines[at].time < line.time) at++;
      this.lines.splice(at, 0, line);
      floor = at + 1;
      added++;
    }
    this.trim();
    return added;
  }

  /** Drop the oldest lines past MAX_LINES; how many went. */
  trim() {
    const extra = this.lines.length - MAX_LINES;
    if (extra <= 0) return 0;
    for (const old of this.lines.splice(0, extra)) if (old.msgid) this.msgids.delete(old.msgid);
    return extra;
  }

  /** Forget the lines shown (/clear); older history is still asked for from where they began. */
  clear() {
    this.cleared = this.oldest();
    this.lines = [];
  }

  /** The oldest and newest lines the server knows (they have a msgid); the oldest may be
   * one cleared away, so that history goes on back from it. */
  oldest() {
    const first = this.lines.find((line) => line.msgid) || null;
    const cleared = this.cleared || null;
    if (!first || !cleared) return first || cleared;
    return first.time <= cleared.time ? first : cleared;
  }

  newest() {
    for (let i = this.lines.length - 1; i >= 0; i--) if (this.lines[i].msgid) return this.lines[i];
    return null;
  }

  /** Members sorted: operators, voiced, the rest; by name within each. */
  sortedMembers(prefixOrder) {
    const rank = (m) => {
      const i = prefixOrder.indexOf(m.prefixes[0]);
      return m.prefixes ? (i < 0 ? prefixOrder.length : i) : prefixOrder.length + 1;
    };
    return [...this.members.values()].sort(
      (a, b) => rank(a) - rank(b) || a.nick.toLowerCase().localeCompare(b.nick.toLowerCase()),
    );
  }

  /** Who is typing now; drops the expired. */
  typists(now = Date.now()) {
    for (const [nick, until] of this.typing) if (until <= now) this.typing.delete(nick);
    return [...this.typing.keys()];
  }
}
