// Chat: join a room and talk. Browsers cannot hold chat.v1.Chat/ChatStream (bidirectional), so
// the console uses its two halves: Subscribe (server streaming) to receive, Send (unary) to post.
import { client, describeError, isCancel } from "../api";
import { Chat } from "../gen/chat/v1/chat_pb";
import { h, statusLine } from "../ui";

export function chatPage(root: HTMLElement): () => void {
  const chat = client(Chat);
  const status = statusLine("chat-status");
  const room = h("input", { id: "chat-room", value: "lobby", size: 12 });
  const user = h("input", { id: "chat-user", placeholder: "your name", size: 12 });
  const text = h("input", { id: "chat-text", placeholder: "message", size: 50, disabled: true });
  const send = h("button", { id: "chat-send", type: "submit", disabled: true }, "Send");
  const list = h("ul", { id: "chat-log", class: "chat-log" });
  let joined: AbortController | undefined;
  let joinedRoom = "";

  function join(e: Event): void {
    e.preventDefault();
    joined?.abort();
    const ctl = new AbortController();
    joined = ctl;
    joinedRoom = room.value.trim() || "lobby";
    list.replaceChildren();
    status.ok(`in room ${joinedRoom}`);
    text.disabled = send.disabled = false;
    (async () => {
      try {
        for await (const m of chat.subscribe({ room: joinedRoom }, { signal: ctl.signal })) {
          const time = new Date(Number(m.sentUnixMs)).toISOString().slice(11, 19);
          list.append(h("li", {}, h("span", { class: "muted" }, time + " "), h("strong", {}, m.user), ": ", h("span", { class: "text" }, m.text)));
          list.scrollTop = list.scrollHeight;
        }
      } catch (err) {
        if (ctl.signal.aborted || isCancel(err)) return;
        status.fail(describeError(err));
        text.disabled = send.disabled = true;
      }
    })();
  }

  async function post(e: Event): Promise<void> {
    e.preventDefault();
    try {
      await chat.send({ room: joinedRoom, message: { user: user.value.trim(), text: text.value } });
      text.value = "";
    } catch (err) {
      status.fail(describeError(err));
    }
  }

  root.append(h("div", { class: "panel" }, h("h2", {}, "Chat"),
    h("form", { id: "chat-join", onsubmit: join }, "room ", room, " name ", user, " ", h("button", { id: "chat-join-button", type: "submit" }, "Join")),
    status.el, list,
    h("form", { id: "chat-form", onsubmit: post }, text, " ", send),
    h("p", { class: "muted" }, "Receives with chat.v1.Chat/Subscribe (server streaming) and sends with chat.v1.Chat/Send (unary): gRPC-Web cannot carry the bidirectional ChatStream. Both reach ChatStream participants too.")));
  return () => joined?.abort();
}
