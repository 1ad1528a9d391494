// Reference peer for `make bench`: a hub-style gorilla/websocket chat server in the shape of
// gorilla's examples/chat (one hub goroutine, a read pump and a write pump per connection),
// speaking enough of wsproxy's JSON protocol for the loader's fanout and idle modes. It stores
// nothing and checks no token: the user is the JWT's unverified "sub", else ?user=, else a counter.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const (
	writeWait      = 10 * time.Second
	pongWait       = 60 * time.Second
	pingPeriod     = (pongWait * 9) / 10
	maxMessageSize = 64 * 1024
	sendQueue      = 256
)

var upgrader = websocket.Upgrader{}

type client struct {
	hub  *hub
	conn *websocket.Conn
	send chan []byte
	user string
}

// inFrame is every client->server frame the bench sends; unknown fields are ignored.
type inFrame struct {
	Type string          `json:"type"`
	Room string          `json:"room"`
	To   string          `json:"to"`
	Body json.RawMessage `json:"body"`
	Cid  string          `json:"cid"`
	ID   int64           `json:"id"`
}

type outMsg struct {
	Type string          `json:"type"`
	ID   int64           `json:"id"`
	From string          `json:"from"`
	To   string          `json:"to,omitempty"`
	Room string          `json:"room,omitempty"`
	Body json.RawMessage `json:"body"`
	Ts   int64           `json:"ts"`
	Cid  string          `json:"cid,omitempty"`
}

type request struct {
	c *client
	f inFrame
}

// hub owns every map; clients talk to it through channels only, as in the gorilla example.
type hub struct {
	rooms      map[string]map[*client]bool
	users      map[string]map[*client]bool
	register   chan *client
	unregister chan *client
	requests   chan request
	nextID     int64
}

func newHub() *hub {
	return &hub{
		rooms:      make(map[string]map[*client]bool),
		users:      make(map[string]map[*client]bool),
		register:   make(chan *client),
		unregister: make(chan *client),
		requests:   make(chan request, 1024),
	}
}

func mustJSON(v interface{}) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		log.Fatal(err)
	}
	return b
}

// push queues a frame; a client whose queue is full is dropped, as the gorilla example does.
func (h *hub) push(c *client, b []byte) {
	select {
	case c.send <- b:
	default:
		h.drop(c)
	}
}

func (h *hub) drop(c *client) {
	set, ok := h.users[c.user]
	if !ok || !set[c] {
		return
	}
	delete(set, c)
	if len(set) == 0 {
		delete(h.users, c.user)
	}
	for name, members := range h.rooms {
		delete(members, c)
		if len(members) == 0 {
			delete(h.rooms, name)
		}
	}
	close(c.send)
}

func (h *hub) handle(c *client, f inFrame) {
	now := time.Now().UnixMilli()
	switch f.Type {
	case "join", "leave":
		if f.Room == "" {
			h.push(c, mustJSON(map[string]string{"type": "error", "code": "bad_request"}))
			return
		}
		members := h.rooms[f.Room]
		if f.Type == "join" {
			if members == nil {
				members = make(map[*client]bool)
				h.rooms[f.Room] = members
			}
			members[c] = true
			h.push(c, mustJSON(map[string]string{"type": "joined", "room": f.Room}))
		} else {
			delete(members, c)
			h.push(c, mustJSON(map[string]string{"type": "left", "room": f.Room}))
		}
	case "send":
		h.nextID++
		m := outMsg{Type: "msg", ID: h.nextID, From: c.user, To: f.To, Room: f.Room, Body: f.Body,
			Ts: now, Cid: f.Cid}
		var targets map[*client]bool
		if f.Room != "" {
			targets = h.rooms[f.Room]
			if !targets[c] {
				h.push(c, mustJSON(map[string]string{"type": "error", "code": "not_member",
					"cid": f.Cid}))
				return
			}
		} else if f.To != "" {
			targets = h.users[f.To]
		} else {
			h.push(c, mustJSON(map[string]string{"type": "error", "code": "bad_request",
				"cid": f.Cid}))
			return
		}
		if len(f.Body) == 0 {
			m.Body = json.RawMessage("null")
		}
		b := mustJSON(m) // encoded once, shared by every recipient
		for t := range targets {
			if t != c {
				h.push(t, b)
			}
		}
		h.push(c, mustJSON(map[string]interface{}{"type": "sent", "cid": f.Cid, "id": h.nextID,
			"ts": now}))
	case "ack":
	default:
		h.push(c, mustJSON(map[string]string{"type": "error", "code": "unknown_type"}))
	}
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			set := h.users[c.user]
			if set == nil {
				set = make(map[*client]bool)
				h.users[c.user] = set
			}
			set[c] = true
		case c := <-h.unregister:
			h.drop(c)
		case r := <-h.requests:
			if set := h.users[r.c.user]; set[r.c] {
				h.handle(r.c, r.f)
			}
		}
	}
}

func (c *client) readPump() {
	defer func() {
		c.hub.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(maxMessageSize)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error {
		c.conn.SetReadDeadline(time.Now().Add(pongWait))
		return nil
	})
	for {
		_, message, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		c.conn.SetReadDeadline(time.Now().Add(pongWait))
		var f inFrame
		if err := json.Unmarshal(message, &f); err != nil {
			f = inFrame{Type: "\x00bad"}
		}
		c.hub.requests <- request{c, f}
	}
}

func (c *client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case message, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			if err := c.conn.WriteMessage(websocket.TextMessage, message); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

// userOf reads the token's "sub" without checking the signature: this peer measures delivery only.
func userOf(r *http.Request, seq int64) string {
	if tok := r.URL.Query().Get("token"); tok != "" {
		if parts := strings.Split(tok, "."); len(parts) == 3 {
			if raw, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
				var claims struct {
					Sub string `json:"sub"`
				}
				if json.Unmarshal(raw, &claims) == nil && claims.Sub != "" {
					return claims.Sub
				}
			}
		}
	}
	if u := r.URL.Query().Get("user"); u != "" {
		return u
	}
	return "anon" + strconv.FormatInt(seq, 10)
}

var sessions int64

func serveWs(h *hub, w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	id := atomic.AddInt64(&sessions, 1)
	c := &client{hub: h, conn: conn, send: make(chan []byte, sendQueue), user: userOf(r, id)}
	c.send <- mustJSON(map[string]interface{}{"type": "welcome",
		"session": strconv.FormatInt(id, 10), "user": c.user, "ping_interval": int(pingPeriod / time.Second)})
	c.send <- []byte(`{"type":"replayed"}`)
	h.register <- c
	go c.writePump()
	go c.readPump()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9002", "listen address")
	path := flag.String("path", "/ws", "chat endpoint")
	flag.Parse()
	h := newHub()
	go h.run()
	http.HandleFunc(*path, func(w http.ResponseWriter, r *http.Request) { serveWs(h, w, r) })
	log.Printf("gorilla-chat listening on %s%s", *addr, *path)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
