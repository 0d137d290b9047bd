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
    this.seq = 0;
  }

  /**
   * Put `line` ({kind, time: Date, nick, text, msgid, self}) where its time says; false if
   * its msgid is here already. `where`: "end" for a line arriving now.
   */
  add(line) {
    if (line.msgid) {
      if (this.msgids.has(line.msgid)) return -1;
      this.msgids.add(line.msgid);
    }
    line.seq = ++this.seq;
    let at = this.lines.length;
    while (at > 0 && this.lines[at - 1].time > line.time) at--;
    this.lines.splice(at, 0, line);
    if (this.lines.length > MAX_LINES) {
      const dropped = this.lines.splice(0, this.lines.length - MAX_LINES);
      for (const old of dropped) if (old.msgid) this.msgids.delete(old.msgid);
      at -= dropped.length;
    }
    return at;
  }

  /** The oldest and newest lines the server knows (they have a msgid). */
  oldest() {
    return this.lines.find((line) => line.msgid) || null;
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
