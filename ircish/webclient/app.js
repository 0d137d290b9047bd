// The page: the login form, the connection's lines turned into conversations, the input
// line's lines sent as TYPED (the server reads them through its one slash table), history,
// typing notifications, desktop notifications, drawers and keys.

import { Connection } from "./connection.js";
import { InputLine } from "./input.js";
import { actionText, isRoom, makeCasefold, plainText } from "./irc.js";
import { Conversation, SERVER, TYPING_ACTIVE_MS, TYPING_PAUSED_MS } from "./state.js";
import { View } from "./view.js";

/** Lines one history request asks for. */
const HISTORY_PAGE = 50;
/** Lines asked for of what was missed while the connection was down. */
const MISSED_LINES = 200;
/** `+typing=active` is sent at most this often (IRCv3 typing: about every 3 s). */
const TYPING_EVERY_MS = 3000;
/** The longest line sent at once, in UTF-8 bytes: the server cuts long text into IRC
 * lines itself, but a WebSocket message past its read buffer (limits.read_buffer_bytes,
 * 8192 by default) would cost the connection. */
const MAX_LINE_BYTES = 7000;
/** A log this close to its top asks for older lines. */
const NEAR_TOP_PX = 30;
/** Lines that count as unread and may be mentions. */
const SAID = new Set(["privmsg", "action", "notice"]);

/**
 * The commands the page answers itself, without sending: the few that are about this
 * page's views. `run` returns false to send the line after all (/join of a new room).
 * Every other /command goes to the server as TYPED and its slash table.
 */
const LOCAL_COMMANDS = {
  switch: {
    syntax: "<#room|nick>",
    summary: "Show another conversation.",
    run: (app, args) => {
      const name = args.split(" ")[0] || "";
      return app.switchTo(name) || app.switchTo(`#${name}`) || app.refuse(`You have no conversation ${name}`);
    },
  },
  join: {
    run: (app, args) => {
      const words = args.split(" ").filter(Boolean);
      const conv = words.length === 1 && app.find(words[0].startsWith("#") ? words[0] : `#${words[0]}`);
      return conv && conv.kind === "room" && conv.joined ? app.switchTo(conv.target) : false;
    },
  },
  query: {
    syntax: "<nick>",
    summary: "Open a private chat.",
    run: (app, args) => {
      const nick = args.split(" ")[0];
      if (!nick || isRoom(nick, app.chantypes())) return app.refuse("usage: /query <nick>");
      app.openPrivate(nick, true);
      return true;
    },
  },
  close: {
    syntax: "",
    summary: "Close this private chat, or leave this room.",
    run: (app) => app.closeCurrent(),
  },
  history: {
    syntax: "[n]",
    summary: "Load n (default 50) older lines of this conversation.",
    run: (app, args) => {
      const n = Number(args || HISTORY_PAGE);
      if (!Number.isInteger(n) || n < 1) return app.refuse("usage: /history [n]");
      app.loadOlder(n, true);
      return true;
    },
  },
  clear: {
    syntax: "",
    summary: "Clear this conversation's lines on this page.",
    run: (app) => {
      const conv = app.currentConversation();
      conv.clear();
      app.view.renderLog(conv);
      return true;
    },
  },
};

function websocketUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
}

class App {
  constructor() {
    this.casefold = makeCasefold();
    this.conversations = new Map();
    this.current = SERVER;
    this.me = "";
    this.account = null;
    this.batches = new Map();
    this.labels = new Map();
    this.names = new Map();
    this.slashRows = [];
    this.typingSent = { target: null, at: 0 };
    this.notifying = false;
    this.view = new View(this);
    this.conn = new Connection(websocketUrl(), this);
    this.input = new InputLine(this, document.getElementById("input"), document.getElementById("hint"));
    this.reset();
    this.wire();
    this.loadSlashTable();
  }

  reset() {
    this.conversations.clear();
    this.conversations.set(SERVER, new Conversation(SERVER, "server"));
    this.current = SERVER;
    this.batches.clear();
    this.labels.clear();
    this.showConversation();
  }

  // -- the page's controls ------------------------------------------------------------

  wire() {
    const $ = (id) => document.getElementById(id);
    const form = $("login");
    const nick = $("nick");
    nick.value = localStorage.getItem("ircish.nick") || "";
    $("register").addEventListener("change", () => {
      $("email-row").hidden = !$("register").checked;
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.login();
    });
    $("toggle-conversations").addEventListener("click", () => this.toggleDrawer("conversations-open"));
    $("toggle-members").addEventListener("click", () => this.toggleDrawer("members-open"));
    $("scrim").addEventListener("click", () => this.closeDrawers());
    $("notify").addEventListener("click", () => this.enableNotifications());
    if (!("Notification" in window)) $("notify").hidden = true;
    else if (Notification.permission === "granted") this.notificationsOn();
    const log = $("log");
    log.addEventListener("scroll", () => {
      if (log.scrollTop < NEAR_TOP_PX) this.loadOlder();
    });
    document.addEventListener("keydown", (event) => this.globalKey(event));
    setInterval(() => this.view.renderTyping(this.currentConversation()), 1000);
  }

  login() {
    const $ = (id) => document.getElementById(id);
    const nick = $("nick").value.trim();
    const password = $("password").value;
    const register = $("register").checked;
    const error = $("login-error");
    error.replaceChildren();
    if (!nick) {
      error.textContent = "Choose a nick.";
      return;
    }
    if (register && !password) {
      error.textContent = "Registering an account needs a password.";
      return;
    }
    localStorage.setItem("ircish.nick", nick);
    $("connect").disabled = true;
    this.reset();
    this.conn.start({ nick, password, register, email: $("email").value.trim() });
  }

  showLogin(message, nickTaken = null) {
    const $ = (id) => document.getElementById(id);
    document.body.classList.remove("chatting");
    $("connect").disabled = false;
    const error = $("login-error");
    error.textContent = message;
    if (nickTaken) {
      const other = `${nickTaken}_`;
      const button = document.createElement("button");
      button.type = "button";
      button.id = "use-nick";
      button.textContent = `Use ${other}`;
      button.addEventListener("click", () => {
        $("nick").value = other;
        this.login();
      });
      error.append(" ", button);
    }
    $("nick").focus();
  }

  loadSlashTable() {
    fetch("slash.json")
      .then((answer) => (answer.ok ? answer.json() : []))
      .then((rows) => {
        this.slashRows = rows;
      })
      .catch(() => {});
  }

  /** The server's slash table (slash.json) and the page's own commands, which say what
   * they do here where the table's row says what a terminal does. */
  commands() {
    const own = Object.entries(LOCAL_COMMANDS)
      .filter(([, local]) => local.syntax !== undefined)
      .map(([name, local]) => ({ name, syntax: local.syntax, summary: local.summary }));
    const mine = new Set(own.map((row) => row.name));
    return [...this.slashRows.filter((row) => !mine.has(row.name)), ...own];
  }

  toggleDrawer(name) {
    const open = !document.body.classList.contains(name);
    this.closeDrawers(false);
    document.body.classList.toggle(name, open);
    if (open) {
      const first = document.querySelector(
        name === "members-open" ? "#members button" : "#conversations li.current button",
      );
      (first || document.getElementById(name === "members-open" ? "members" : "conversations")).focus();
    }
  }

  closeDrawers(focusInput = true) {
    document.body.classList.remove("conversations-open", "members-open");
    if (focusInput) this.focusInput();
  }

  focusInput() {
    if (document.body.classList.contains("chatting")) document.getElementById("input").focus();
  }

  globalKey(event) {
    if (!document.body.classList.contains("chatting")) return;
    const ordered = this.ordered();
    const at = ordered.indexOf(this.currentConversation());
    let next = null;
    if ((event.altKey && event.key === "ArrowUp") || (event.ctrlKey && event.key === "PageUp")) {
      next = ordered[(at - 1 + ordered.length) % ordered.length];
    } else if ((event.altKey && event.key === "ArrowDown") || (event.ctrlKey && event.key === "PageDown")) {
      next = ordered[(at + 1) % ordered.length];
    } else if (event.altKey && /^Digit[1-9]$/.test(event.code)) {
      next = ordered[Number(event.code.slice(5)) - 1] || null;
      if (!next) return;
    } else if (event.key === "Escape") {
      this.closeDrawers();
      return;
    } else {
      return;
    }
    event.preventDefault();
    this.switchTo(next.target);
  }

  enableNotifications() {
    Notification.requestPermission().then((permission) => {
      if (permission === "granted") this.notificationsOn();
      else document.getElementById("notify").textContent = "Notifications blocked";
    });
  }

  notificationsOn() {
    this.notifying = true;
    const button = document.getElementById("notify");
    button.textContent = "Notifications on";
    button.setAttribute("aria-pressed", "true");
    button.disabled = true;
  }

  notify(conv, line) {
    if (!this.notifying || (!document.hidden && conv === this.currentConversation())) return;
    const title = conv.kind === "private" ? line.nick : `${line.nick} in ${conv.target}`;
    const note = new Notification(title, { body: plainText(line.text), tag: conv.target });
    note.onclick = () => {
      window.focus();
      this.switchTo(conv.target);
      note.close();
    };
  }

  // -- conversations --------------------------------------------------------------------

  find(target) {
    return this.conversations.get(target === SERVER ? SERVER : this.casefold(target)) || null;
  }

  server() {
    return this.conversations.get(SERVER);
  }

  currentConversation() {
    return this.conversations.get(this.current) || this.conversations.get(SERVER);
  }

  /** Server view first, then rooms and private chats as they came. */
  ordered() {
    return [...this.conversations.values()];
  }

  /** The room `name`'s conversation, made if there is none. */
  room(name) {
    let conv = this.find(name);
    if (!conv) {
      conv = new Conversation(name, "room");
      this.conversations.set(this.casefold(name), conv);
      this.view.renderConversations();
    }
    return conv;
  }

  openPrivate(nick, show = false) {
    let conv = this.find(nick);
    if (!conv) {
      conv = new Conversation(nick, "private");
      this.conversations.set(this.casefold(nick), conv);
      this.requestHistory(conv);
      this.view.renderConversations();
    }
    if (show) this.switchTo(conv.target);
    return conv;
  }

  switchTo(target) {
    const conv = this.find(target);
    if (!conv) return false;
    this.current = target === SERVER ? SERVER : this.casefold(target);
    conv.unread = 0;
    conv.mention = false;
    this.showConversation();
    this.closeDrawers();
    return true;
  }

  showConversation() {
    const conv = this.currentConversation();
    this.view.renderConversations();
    this.view.renderHeader(conv);
    this.view.renderLog(conv);
    this.view.renderMembers(conv);
    this.view.renderTyping(conv);
    this.fillScreen(conv);
  }

  closeCurrent() {
    const conv = this.currentConversation();
    if (conv.kind === "server") return this.refuse("The server view stays open.");
    if (conv.kind === "room" && conv.joined) {
      this.send(`/part ${conv.target}`, conv);
      return true;
    }
    this.forget(conv);
    return true;
  }

  forget(conv) {
    const ordered = this.ordered();
    const at = ordered.indexOf(conv);
    this.conversations.delete(this.casefold(conv.target));
    if (conv === this.conversations.get(this.current) || this.current === this.casefold(conv.target)) {
      this.switchTo(ordered[at - 1].target);
    } else {
      this.view.renderConversations();
    }
  }

  refuse(text) {
    this.input.showError(text);
    return true;
  }

  isMe(nick) {
    return !!nick && this.casefold(nick) === this.casefold(this.me);
  }

  chantypes() {
    return this.conn.isupport.CHANTYPES ?? "#";
  }

  /** PREFIX=(ov)@+ : the modes and their symbols, highest first. */
  prefixes() {
    const match = /^\(([^)]*)\)(.*)$/.exec(this.conn.isupport.PREFIX || "(ov)@+");
    return match ? { modes: match[1], symbols: match[2] } : { modes: "ov", symbols: "@+" };
  }

  prefixSymbols() {
    return this.prefixes().symbols;
  }

  nicksHere() {
    const conv = this.currentConversation();
    if (conv.kind === "private") return [conv.target];
    return conv
      .sortedMembers(this.prefixSymbols())
      .map((member) => member.nick)
      .filter((nick) => !this.isMe(nick));
  }

  roomNames() {
    return this.ordered()
      .filter((conv) => conv.kind === "room")
      .map((conv) => conv.target);
  }

  // -- the input line -----------------------------------------------------------------

  submit(line) {
    if (line.startsWith("/")) {
      const [name, ...rest] = line.slice(1).split(" ");
      const local = LOCAL_COMMANDS[name.toLowerCase()];
      if (local && local.run(this, rest.join(" ").trim()) !== false) return;
    }
    this.send(line, this.currentConversation());
  }

  /** `line` as typed, to the server (TYPED), for the conversation `conv`. */
  send(line, conv) {
    const target = conv.kind === "server" ? "*" : conv.target;
    const size = new TextEncoder().encode(line).length;
    if (size > MAX_LINE_BYTES) {
      this.input.restore(line);
      this.input.showError(`Too long to send at once: ${size} bytes, at most ${MAX_LINE_BYTES}. Send it in parts.`);
      return;
    }
    const label = this.conn.newLabel();
    if (!this.conn.connected || !this.conn.send("TYPED", [target, line], label ? { label } : {})) {
      this.input.restore(line);
      this.input.showError("Not connected: nothing was sent.");
      return;
    }
    // The server closes the connection after a /quit: no reconnecting then.
    if (/^\/quit(\s|$)/i.test(line)) this.conn.stopped = true;
    if (label) this.labels.set(label, { target: conv.target, line });
    if (this.typingSent.target === target && !line.startsWith("/")) this.sendTyping(target, "done");
  }

  /** The input line changed: tell the conversation someone is typing (throttled). */
  typed(value) {
    const conv = this.currentConversation();
    if (conv.kind === "server" || !this.conn.connected) return;
    const now = Date.now();
    if (value && !value.startsWith("/")) {
      if (this.typingSent.target !== conv.target || now - this.typingSent.at > TYPING_EVERY_MS) {
        this.sendTyping(conv.target, "active");
      }
    } else if (this.typingSent.target === conv.target) {
      this.sendTyping(conv.target, "done");
    }
  }

  sendTyping(target, state) {
    if (!this.conn.caps.has("message-tags")) return;
    this.conn.send("TAGMSG", [target], { "+typing": state });
    this.typingSent = state === "done" ? { target: null, at: 0 } : { target, at: Date.now() };
  }

  // -- the connection's news ------------------------------------------------------------

  state(name, detail) {
    const text = {
      connecting: "Connecting…",
      registering: "Logging in…",
      connected: "Connected",
      reconnecting: `Disconnected; trying again in ${Math.round((detail || 0) / 1000)} s…`,
      closed: "Disconnected",
    }[name];
    this.view.setStatus(name, text);
    if (name === "reconnecting") {
      for (const conv of this.conversations.values()) {
        if (conv.kind === "room" && conv.joined) {
          conv.joined = false;
          conv.rejoin = true;
        }
        conv.historyPending = null;
        conv.typing.clear();
      }
      this.batches.clear();
      this.labels.clear();
      this.loggedIn(null);
      this.view.renderConversations();
      this.addInfo(this.conversations.get(SERVER), text, "error");
    }
    if (name === "closed" && this.conn.stopped && document.body.classList.contains("chatting")) {
      this.showLogin("You have left. Log in again?");
    }
  }

  failed(error) {
    this.showLogin(error.message, error.nickTaken);
  }

  loggedIn(name) {
    this.account = name;
    this.view.renderMe(this.me, this.account);
  }

  registered(nick, firstTime) {
    this.me = nick;
    this.view.renderMe(this.me, this.account);
    document.body.classList.add("chatting");
    document.getElementById("connect").disabled = false;
    document.getElementById("password").value = "";
    if (firstTime) {
      const wanted = location.hash.length > 1 ? decodeURIComponent(location.hash) : "";
      if (wanted && isRoom(wanted, this.chantypes())) this.conn.send("JOIN", [wanted]);
    } else {
      const rooms = this.roomNames().filter((name) => this.find(name).rejoin);
      if (rooms.length) this.conn.send("JOIN", [rooms.join(",")]);
      for (const conv of this.conversations.values()) if (conv.kind === "private") this.requestHistory(conv);
    }
    this.focusInput();
  }

  line(msg) {
    if (msg.command === "BATCH") {
      this.batch(msg);
      return;
    }
    const batch = msg.tags.batch && this.batches.get(msg.tags.batch);
    if (batch && batch.type === "chathistory") {
      batch.lines.push(msg);
      return;
    }
    msg.label = msg.tags.label || (batch && batch.label) || null;
    const handler = HANDLERS[msg.command];
    if (handler) handler.call(this, msg);
    else if (/^\d\d\d$/.test(msg.command)) this.numeric(msg);
    else this.addInfo(this.labelled(msg) || this.conversations.get(SERVER), msg.params.join(" "));
    if (msg.tags.label) this.labels.delete(msg.tags.label);
  }

  batch(msg) {
    const [ref, type, ...args] = msg.params;
    const id = ref.slice(1);
    if (ref.startsWith("+")) {
      const outer = msg.tags.batch && this.batches.get(msg.tags.batch);
      this.batches.set(id, { type, args, lines: [], label: msg.tags.label || (outer && outer.label) });
      return;
    }
    const batch = this.batches.get(id);
    this.batches.delete(id);
    if (!batch) return;
    if (batch.type === "chathistory") this.history(batch.args[0], batch.lines);
    if (batch.label && !msg.tags.batch) this.labels.delete(batch.label);
  }

  /** Is `msg` an answer to a /`command` the person typed (not one a /join brings)? */
  asked(msg, command) {
    const pending = msg.label && this.labels.get(msg.label);
    return !!pending && new RegExp(`^/${command}(\\s|$)`, "i").test(pending.line);
  }

  /** The conversation a labelled answer belongs to (where its command was typed). */
  labelled(msg) {
    const pending = msg.label && this.labels.get(msg.label);
    return pending ? this.find(pending.target) : null;
  }

  /** A line as the log shows it, from a PRIVMSG, JOIN, ...; null for what is not shown. */
  lineOf(msg) {
    const base = {
      time: msg.tags.time ? new Date(msg.tags.time) : new Date(),
      msgid: msg.tags.msgid || null,
      nick: msg.nick,
      self: this.isMe(msg.nick),
    };
    const p = msg.params;
    switch (msg.command) {
      case "PRIVMSG":
      case "NOTICE": {
        const text = p[1] || "";
        const action = actionText(text);
        if (action === null && text.startsWith("\x01")) return null; // CTCP: not for people
        const kind = action !== null ? "action" : msg.command === "NOTICE" ? "notice" : "privmsg";
        const line = { ...base, kind, text: action ?? text };
        line.mention = !line.self && this.mentions(line.text);
        return line;
      }
      case "JOIN":
        return { ...base, kind: "join", room: p[0] };
      case "PART":
        return { ...base, kind: "part", room: p[0], text: p[1] || "" };
      case "QUIT":
        return { ...base, kind: "quit", text: p[0] || "" };
      case "NICK":
        return { ...base, kind: "nick", text: p[0] };
      case "KICK":
        return { ...base, kind: "kick", nick: p[1], by: msg.nick, self: this.isMe(p[1]), text: p[2] || "" };
      case "TOPIC":
        return { ...base, kind: "topic", text: p[1] || "" };
      case "MODE":
        return { ...base, kind: "mode", text: p.slice(1).join(" ") };
      default:
        return null;
    }
  }

  mentions(text) {
    if (!this.me) return false;
    // The nick as a word: not inside a longer nick (nicks may hold [ ] \\ ^ { } | ` -).
    const escaped = this.me.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const other = "[^\\w\\[\\]\\\\^{}|`-]";
    return new RegExp(`(^|${other})${escaped}($|${other})`, "i").test(plainText(text));
  }

  /** Put `line` in `conv`; a live line in another conversation counts as unread. */
  addLine(conv, line, live = true) {
    const index = conv.add(line);
    if (index < 0) return;
    const current = conv === this.currentConversation();
    if (current) this.view.insertLine(conv, line, index);
    if (!live || line.self || !SAID.has(line.kind)) return;
    const important = line.mention || conv.kind === "private";
    if (!current) {
      conv.unread++;
      if (important) conv.mention = true;
      this.view.renderConversations();
    }
    if (important) this.notify(conv, line);
  }

  addInfo(conv, text, kind = "info") {
    this.addLine(conv, { kind, text, time: new Date(), msgid: null, nick: "", self: false }, false);
  }

  // -- history ------------------------------------------------------------------------

  /** What a conversation missed since its line `newest` (after a reconnect), or its latest
   * lines when it has none. */
  requestHistory(conv, newest = conv.newest()) {
    if (!this.conn.connected || !this.conn.caps.has("draft/chathistory") || conv.historyPending) return;
    const limit = newest ? MISSED_LINES : HISTORY_PAGE;
    conv.historyPending = { before: false, limit, first: !newest };
    // From a millisecond before the newest line seen: lines of its millisecond come again
    // (and are dropped as seen) rather than lost; and a time works where a msgid may not
    // (a server that kept no history over a restart).
    const since = newest ? `timestamp=${new Date(newest.time.getTime() - 1).toISOString()}` : "*";
    this.conn.send("CHATHISTORY", ["LATEST", conv.target, since, String(limit)]);
  }

  /** Older lines of the current conversation (the log was scrolled to its top). */
  loadOlder(limit = HISTORY_PAGE, asked = false) {
    const conv = this.currentConversation();
    if (conv.kind === "server" || conv.historyPending || !this.conn.connected) return;
    if (!asked && conv.cleared && !conv.lines.length) return; // just /cleared: keep it empty
    if (conv.historyDone) {
      if (asked) this.addInfo(conv, "No older lines.");
      return;
    }
    if (!this.conn.caps.has("draft/chathistory")) return;
    const oldest = conv.oldest();
    if (!oldest) {
      this.requestHistory(conv);
      return;
    }
    conv.historyPending = { before: true, limit };
    this.conn.send("CHATHISTORY", ["BEFORE", conv.target, `msgid=${oldest.msgid}`, String(limit)]);
  }

  history(target, msgs) {
    const conv = this.find(target);
    if (!conv) return;
    const request = conv.historyPending || { before: false, limit: Infinity };
    conv.historyPending = null;
    conv.addHistory(msgs.map((msg) => this.lineOf(msg)).filter(Boolean));
    if ((request.before || request.first) && msgs.length < request.limit) conv.historyDone = true;
    if (conv === this.currentConversation()) {
      this.view.renderLog(conv, request.before ? "keep" : "follow");
      this.fillScreen(conv);
    }
  }

  /** A log too short to scroll cannot be scrolled to its top: ask for more now. */
  fillScreen(conv) {
    const log = this.view.log;
    if (!conv.historyDone && conv.lines.length && log.scrollHeight <= log.clientHeight) {
      this.loadOlder();
    }
  }

  // -- what the server says -------------------------------------------------------------

  message(msg) {
    const line = this.lineOf(msg);
    if (!line) return;
    const target = msg.params[0] || "";
    const room = target.replace(new RegExp(`^[${this.prefixSymbols().replace(/[\]\\^-]/g, "\\$&")}]+`), "");
    let conv;
    if (isRoom(room, this.chantypes())) conv = this.room(room);
    else if (!msg.source.includes("!")) conv = this.labelled(msg) || this.conversations.get(SERVER);
    else if (line.self) conv = this.openPrivate(target);
    else if (msg.command === "NOTICE") conv = this.find(msg.nick) || this.labelled(msg) || this.server();
    else conv = this.openPrivate(msg.nick);
    if (conv.typing.delete(msg.nick) && conv === this.currentConversation()) this.view.renderTyping(conv);
    this.addLine(conv, line);
  }

  typing(msg) {
    const state = msg.tags["+typing"];
    if (!state || this.isMe(msg.nick)) return;
    const target = msg.params[0] || "";
    const conv = isRoom(target, this.chantypes()) ? this.find(target) : this.find(msg.nick);
    if (!conv) return;
    if (state === "done") conv.typing.delete(msg.nick);
    else conv.typing.set(msg.nick, Date.now() + (state === "paused" ? TYPING_PAUSED_MS : TYPING_ACTIVE_MS));
    if (conv === this.currentConversation()) this.view.renderTyping(conv);
  }

  refreshMembers(conv) {
    if (conv === this.currentConversation()) this.view.renderMembers(conv);
  }

  join(msg) {
    const name = msg.params[0];
    const line = this.lineOf(msg);
    if (line.self) {
      const conv = this.room(name);
      const rejoin = conv.rejoin;
      const seen = conv.newest();
      conv.joined = true;
      conv.rejoin = false;
      conv.members.clear();
      this.addLine(conv, line);
      this.requestHistory(conv, seen);
      if (!rejoin) this.switchTo(name);
      else this.view.renderConversations();
      return;
    }
    const conv = this.find(name);
    if (!conv) return;
    conv.members.set(this.casefold(msg.nick), { nick: msg.nick, prefixes: "" });
    this.addLine(conv, line);
    this.refreshMembers(conv);
  }

  part(msg) {
    const conv = this.find(msg.params[0]);
    if (!conv) return;
    if (this.isMe(msg.nick)) {
      conv.joined = false;
      this.forget(conv);
      return;
    }
    conv.members.delete(this.casefold(msg.nick));
    this.addLine(conv, this.lineOf(msg));
    this.refreshMembers(conv);
  }

  kick(msg) {
    const conv = this.find(msg.params[0]);
    if (!conv) return;
    conv.members.delete(this.casefold(msg.params[1]));
    const line = this.lineOf(msg);
    if (line.self) {
      conv.joined = false;
      conv.members.clear();
      this.view.renderConversations();
    }
    this.addLine(conv, line);
    this.refreshMembers(conv);
  }

  quit(msg) {
    const folded = this.casefold(msg.nick);
    for (const conv of this.conversations.values()) {
      const there = conv.members.delete(folded);
      if (there || (conv.kind === "private" && this.casefold(conv.target) === folded)) {
        conv.typing.delete(msg.nick);
        this.addLine(conv, this.lineOf(msg));
        if (there) this.refreshMembers(conv);
      }
    }
  }

  nick(msg) {
    const [renamed] = msg.params;
    const old = this.casefold(msg.nick);
    const line = this.lineOf(msg);
    if (line.self) {
      this.me = renamed;
      this.view.renderMe(this.me, this.account);
      this.addLine(this.conversations.get(SERVER), line);
    }
    for (const conv of [...this.conversations.values()]) {
      const member = conv.members.get(old);
      if (member) {
        conv.members.delete(old);
        conv.members.set(this.casefold(renamed), { ...member, nick: renamed });
        this.addLine(conv, { ...line });
        this.refreshMembers(conv);
      } else if (conv.kind === "private" && this.casefold(conv.target) === old && !this.find(renamed)) {
        this.conversations.delete(old);
        conv.target = renamed;
        this.conversations.set(this.casefold(renamed), conv);
        if (this.current === old) this.current = this.casefold(renamed);
        this.addLine(conv, { ...line });
        this.view.renderConversations();
        if (this.current === this.casefold(renamed)) this.view.renderHeader(conv);
      }
    }
  }

  topic(msg) {
    const conv = this.find(msg.params[0]);
    if (!conv) return;
    conv.topic = msg.params[1] || "";
    this.addLine(conv, this.lineOf(msg));
    if (conv === this.currentConversation()) this.view.renderHeader(conv);
  }

  mode(msg) {
    const [target, modes = "", ...args] = msg.params;
    if (!isRoom(target, this.chantypes())) {
      this.addInfo(this.conversations.get(SERVER), `Your modes: ${msg.params.slice(1).join(" ")}`);
      return;
    }
    const conv = this.find(target);
    if (!conv) return;
    const { modes: prefixModes, symbols } = this.prefixes();
    const chanmodes = this.conn.isupport.CHANMODES || "beI,k,l,imnpst";
    const [listModes = "", always = "", whenSet = ""] = chanmodes.split(",");
    let adding = true;
    for (const letter of modes) {
      if (letter === "+" || letter === "-") {
        adding = letter === "+";
        continue;
      }
      const at = prefixModes.indexOf(letter);
      if (at >= 0) {
        const member = conv.members.get(this.casefold(args.shift() || ""));
        if (!member) continue;
        const symbol = symbols[at];
        const have = new Set(member.prefixes.replace(symbol, ""));
        if (adding) have.add(symbol);
        member.prefixes = [...symbols].filter((s) => have.has(s)).join("");
      } else if ((listModes + always).includes(letter) || (adding && whenSet.includes(letter))) {
        args.shift();
      }
    }
    this.addLine(conv, this.lineOf(msg));
    this.refreshMembers(conv);
  }

  namesReply(msg) {
    const room = msg.params[2];
    const { symbols } = this.prefixes();
    const found = this.names.get(this.casefold(room)) || new Map();
    for (const item of (msg.params[3] || "").split(" ")) {
      if (!item) continue;
      let i = 0;
      while (i < item.length && symbols.includes(item[i])) i++;
      const nick = item.slice(i).split("!")[0];
      found.set(this.casefold(nick), { nick, prefixes: item.slice(0, i) });
    }
    this.names.set(this.casefold(room), found);
    if (this.asked(msg, "names")) this.numeric(msg);
  }

  namesEnd(msg) {
    const folded = this.casefold(msg.params[1]);
    const conv = this.find(msg.params[1]);
    const found = this.names.get(folded);
    this.names.delete(folded);
    if (conv && found && conv.joined) {
      conv.members = found;
      this.refreshMembers(conv);
    }
    if (this.asked(msg, "names")) this.numeric(msg);
  }

  topicReply(msg) {
    const conv = this.find(msg.params[1]);
    if (conv) {
      conv.topic = msg.params[2] || "";
      if (conv === this.currentConversation()) this.view.renderHeader(conv);
    }
    if (this.asked(msg, "topic")) this.numeric(msg);
  }

  fail(msg) {
    const [command, code, ...rest] = msg.params;
    const text = rest[rest.length - 1] || code;
    const pending = msg.label && this.labels.get(msg.label);
    if (command === "TYPED") {
      if (pending) this.input.restore(pending.line);
      this.input.showError(text);
      return;
    }
    if (command === "CHATHISTORY") {
      for (const conv of this.conversations.values()) {
        if (conv.historyPending) {
          conv.historyPending = null;
          conv.historyDone = true;
        }
      }
      return;
    }
    this.addInfo(this.labelled(msg) || this.currentConversation(), text, "error");
  }

  numeric(msg) {
    const code = Number(msg.command);
    if (!msg.label && [4, 5, 333, 366, 900, 901, 903, 908].includes(code)) return;
    let text = msg.params.slice(1).filter((param) => param !== "*").join(" ");
    if (code === 421 && msg.params[1]) {
      text = `Unknown command /${msg.params[1].toLowerCase()}; /help lists the commands`;
    }
    const error = code >= 400 && code < 600;
    // A reply about a room (a /join's topic and names, say) goes to that room's view.
    const room = msg.params[1] && msg.params[1].startsWith("#") ? this.find(msg.params[1]) : null;
    if ((code === 333 || code === 366) && room) return; // who set the topic, the end of names
    const conv = room || this.labelled(msg) || (error ? this.currentConversation() : this.conversations.get(SERVER));
    this.addInfo(conv, text, error ? "error" : "info");
  }
}

/** What each command from the server does to the page (numerics: `numeric`). */
const HANDLERS = {
  PRIVMSG: App.prototype.message,
  NOTICE: App.prototype.message,
  TAGMSG: App.prototype.typing,
  JOIN: App.prototype.join,
  PART: App.prototype.part,
  KICK: App.prototype.kick,
  QUIT: App.prototype.quit,
  NICK: App.prototype.nick,
  TOPIC: App.prototype.topic,
  MODE: App.prototype.mode,
  FAIL: App.prototype.fail,
  353: App.prototype.namesReply,
  366: App.prototype.namesEnd,
  332: App.prototype.topicReply,
  CAP: () => {},
  PONG: () => {},
  ACCOUNT: () => {},
  AWAY: () => {},
  SETNAME: () => {},
  CHGHOST: () => {},
  ERROR(msg) {
    this.addInfo(this.conversations.get(SERVER), msg.params[0] || "Closed", "error");
  },
  INVITE(msg) {
    const room = msg.params[1];
    this.addInfo(this.currentConversation(), `${msg.nick} invites you to ${room} (/join ${room})`);
  },
  WARN(msg) {
    this.addInfo(this.labelled(msg) || this.currentConversation(), msg.params[msg.params.length - 1]);
  },
  NOTE(msg) {
    this.addInfo(this.labelled(msg) || this.currentConversation(), msg.params[msg.params.length - 1]);
  },
};

new App();
