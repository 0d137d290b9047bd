// The DOM: the conversation list, the log, the member list, the topic, who is typing.
// Everything from the network goes in as text (textContent), never as HTML; styles are
// classes (the page's CSP allows no inline style).

import { clock, formattedRuns, nickColour } from "./irc.js";

/** What a line of each kind says after the nick (joins, parts, ...). */
const EVENT_TEXT = {
  join: (line) => `joined ${line.room || ""}`.trim(),
  part: (line) => `left ${line.room || ""}`.trim() + (line.text ? ` (${line.text})` : ""),
  quit: (line) => "quit" + (line.text ? ` (${line.text})` : ""),
  nick: (line) => `is now known as ${line.text}`,
  kick: (line) => `was kicked by ${line.by}` + (line.text ? ` (${line.text})` : ""),
  topic: (line) => (line.text ? `set the topic: ${line.text}` : "cleared the topic"),
  mode: (line) => `set mode ${line.text}`,
};

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Text with IRC formatting, as spans with classes. */
function formatted(text) {
  const span = element("span", "text");
  for (const run of formattedRuns(text)) {
    if (run.classes.length) span.append(element("span", run.classes.join(" "), run.text));
    else span.append(document.createTextNode(run.text));
  }
  return span;
}

export class View {
  constructor(app) {
    this.app = app;
    const $ = (id) => document.getElementById(id);
    this.list = $("conversations");
    this.log = $("log");
    this.members = $("members");
    this.topic = $("topic");
    this.title = $("title");
    this.typing = $("typing");
    this.status = $("status");
    this.me = $("me");
    this.stick = true;
    this.lastTop = 0;
    this.bottomTimer = null;
    this.log.addEventListener("scroll", () => this.followScroll());
  }

  lineElement(line) {
    const li = element("li", "line");
    li.dataset.kind = line.kind;
    if (line.msgid) li.dataset.msgid = line.msgid;
    if (line.self) li.classList.add("self");
    if (line.mention) li.classList.add("mention");
    const time = element("time", "", clock(line.time));
    time.dateTime = line.time.toISOString();
    time.title = line.time.toLocaleString();
    li.append(time);
    if (line.nick) {
      const nick = element("span", `nick ${nickColour(this.app.casefold(line.nick))}`, line.nick);
      li.append(nick);
    }
    const says = EVENT_TEXT[line.kind];
    li.append(says ? element("span", "text", says(line)) : formatted(line.text));
    return li;
  }

  /** Near enough to the bottom that new lines should keep it there. */
  atBottom() {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
  }

  /**
   * Whether new lines keep the log at its bottom, decided when it scrolls, never for each
   * line: measuring after every inserted line would lay the page out once per message,
   * which a busy room cannot afford. Scrolling up stops following; reaching the bottom
   * follows again. Programmatic scrolls only go down, and content growing scrolls nothing.
   */
  followScroll() {
    const top = this.log.scrollTop;
    if (top < this.lastTop) this.stick = this.atBottom();
    else if (!this.stick) this.stick = this.atBottom();
    this.lastTop = top;
  }

  scrollToBottom() {
    this.log.scrollTop = this.log.scrollHeight;
    this.lastTop = this.log.scrollTop;
    this.stick = true;
  }

  /** To the bottom once the lines arriving together are in (one layout, not one each). */
  scrollToBottomSoon() {
    if (this.bottomTimer) return;
    this.bottomTimer = setTimeout(() => {
      this.bottomTimer = null;
      if (this.stick) this.scrollToBottom();
    }, 0);
  }

  /**
   * The whole log of `conv`. `scroll`: "bottom" (a conversation just opened), "keep" (older
   * lines came in above: what was on screen stays where it was), "follow" (to the bottom
   * if it was there).
   */
  renderLog(conv, scroll = "bottom") {
    const fromBottom = this.log.scrollHeight - this.log.scrollTop;
    this.log.replaceChildren(...conv.lines.map((line) => this.lineElement(line)));
    this.log.dataset.target = conv.target;
    if (scroll === "keep") {
      this.log.scrollTop = this.log.scrollHeight - fromBottom;
      this.lastTop = this.log.scrollTop;
      this.stick = this.atBottom();
    } else if (scroll === "bottom" || this.stick) {
      this.scrollToBottom();
    }
  }

  /** A line added to the current conversation at `index` of its lines. */
  insertLine(conv, line, index) {
    this.log.insertBefore(this.lineElement(line), this.log.children[index] || null);
    while (this.log.children.length > conv.lines.length) this.log.firstElementChild.remove();
    if (this.stick) this.scrollToBottomSoon();
  }

  renderConversations() {
    // A keyboard user moving through the list keeps their place when it is redrawn.
    const focused = this.list.contains(document.activeElement)
      ? document.activeElement.closest("li")?.dataset.target
      : null;
    const items = this.app.ordered().map((conv, i) => {
      const li = element("li");
      li.dataset.target = conv.target;
      li.dataset.kind = conv.kind;
      const button = element("button", "switch");
      button.type = "button";
      const label = conv.kind === "server" ? "server" : conv.target;
      button.append(element("span", "name", label));
      if (conv.unread) button.append(element("span", "unread", String(conv.unread)));
      if (i < 9) button.title = `Alt+${i + 1}`;
      if (conv === this.app.currentConversation()) {
        li.classList.add("current");
        button.setAttribute("aria-current", "true");
      }
      if (conv.mention) li.classList.add("mention");
      if (conv.kind === "room" && !conv.joined) li.classList.add("parted");
      button.addEventListener("click", () => this.app.switchTo(conv.target));
      li.append(button);
      return li;
    });
    this.list.replaceChildren(...items);
    // On a phone the list is a closed drawer: its button says when something waits there.
    const waiting = this.app.ordered().filter((conv) => conv.unread);
    const toggle = document.getElementById("toggle-conversations");
    toggle.classList.toggle("unread", waiting.length > 0);
    toggle.classList.toggle("mention", waiting.some((conv) => conv.mention));
    this.renderTitle();
    if (focused !== null) {
      const again = [...this.list.children].find((li) => li.dataset.target === focused);
      again?.querySelector("button").focus();
    }
  }

  /** The tab's title: the conversation, and how many lines wait unread elsewhere. */
  renderTitle() {
    const unread = this.app.ordered().reduce((sum, conv) => sum + conv.unread, 0);
    document.title = (unread ? `(${unread}) ` : "") + (this.baseTitle || "ircish");
  }

  renderMembers(conv) {
    const order = this.app.prefixSymbols();
    const items = conv.sortedMembers(order).map((member) => {
      const li = element("li");
      li.dataset.nick = member.nick;
      const button = element("button", "member");
      button.type = "button";
      button.title = `Private chat with ${member.nick}`;
      button.append(element("span", "prefix", member.prefixes.slice(0, 1)));
      button.append(element("span", `nick ${nickColour(this.app.casefold(member.nick))}`, member.nick));
      button.addEventListener("click", () => this.app.openPrivate(member.nick, true));
      li.append(button);
      return li;
    });
    this.members.replaceChildren(...items);
    document.body.classList.toggle("no-members", conv.kind !== "room");
    document.getElementById("member-count").textContent =
      conv.kind === "room" ? String(conv.members.size) : "";
  }

  renderHeader(conv) {
    this.title.textContent = conv.kind === "server" ? "server" : conv.target;
    this.topic.replaceChildren(formatted(conv.topic));
    this.topic.title = conv.topic;
    this.baseTitle = `${conv.kind === "server" ? "ircish" : conv.target} – ircish`;
    this.renderTitle();
  }

  renderTyping(conv) {
    const names = conv.typists();
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = "Several people are typing…";
    this.typing.textContent = text;
  }

  renderMe(nick, account) {
    this.me.textContent = account ? `${nick} (account ${account})` : nick;
    this.me.dataset.account = account || "";
  }

  setStatus(state, text) {
    this.status.textContent = text;
    this.status.dataset.state = state;
    document.body.dataset.connection = state;
  }
}
