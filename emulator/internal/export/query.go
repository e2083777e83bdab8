package export

import (
	"fmt"
	"strconv"
	"strings"
)

// Filter is a parsed export query.
type Filter struct {
	// From is the device template (a DTMI or template id) the query
	// selects from; "" for "devices" (every device).
	From string
	// alias is the name given with AS (a prefix "A." of field names).
	alias string
	where node
}

// ParseFilter parses the subset of IoT Central's export query language
// the emulator serves:
//
//	SELECT * FROM <devices | template id or DTMI> [AS alias] [WHERE condition]
//
// where condition combines comparisons (= != <> < <= > >=) of a field and
// a literal (number, 'string' or "string", true, false) with AND, OR, NOT
// and parentheses. A field is a device system property ($id,
// $displayName, $template, $enabled, $provisioned, $simulated) or, for
// the telemetry source, a telemetry field of the message (a dotted path
// reaches into an object), for the properties source, a changed property
// (name, or component.name). Another projection than *, several FROM
// items, functions and other sources' fields are refused. Errors wrap
// ErrInvalid.
func ParseFilter(q, source string) (*Filter, error) {
	if len(q) > MaxFilterBytes {
		return nil, invalidf("filter is longer than %d bytes", MaxFilterBytes)
	}
	toks, err := lexQuery(q)
	if err != nil {
		return nil, invalidf("filter: %v", err)
	}
	p := &qparser{toks: toks, source: source}
	f, err := p.query()
	if err != nil {
		return nil, invalidf("filter %q: %v", q, err)
	}
	return f, nil
}

type qtokKind int

const (
	qWord qtokKind = iota
	qString
	qNumber
	qOp
	qPunct
)

type qtok struct {
	kind qtokKind
	text string
	at   int
}

func lexQuery(s string) ([]qtok, error) {
	var out []qtok
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')' || c == '*' || c == ',':
			out = append(out, qtok{qPunct, string(c), i})
			i++
		case c == '"' || c == '\'':
			j := i + 1
			var b strings.Builder
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at offset %d", i)
			}
			out = append(out, qtok{qString, b.String(), i})
			i = j + 1
		case strings.ContainsRune("=!<>", rune(c)):
			op := string(c)
			if i+1 < len(s) && (s[i:i+2] == "!=" || s[i:i+2] == "<>" || s[i:i+2] == "<=" || s[i:i+2] == ">=") {
				op = s[i : i+2]
			} else if c == '!' {
				return nil, fmt.Errorf("unexpected '!' at offset %d", i)
			}
			out = append(out, qtok{qOp, op, i})
			i += len(op)
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\n\r()*,\"'=!<>", rune(s[j])) {
				j++
			}
			w := s[i:j]
			if _, err := strconv.ParseFloat(w, 64); err == nil {
				out = append(out, qtok{qNumber, w, i})
			} else {
				out = append(out, qtok{qWord, w, i})
			}
			i = j
		}
	}
	return out, nil
}

type qparser struct {
	toks   []qtok
	pos    int
	source string
	alias  string
}

func (p *qparser) peek() (qtok, bool) {
	if p.pos >= len(p.toks) {
		return qtok{}, false
	}
	return p.toks[p.pos], true
}

func (p *qparser) keyword(w string) bool {
	t, ok := p.peek()
	if ok && t.kind == qWord && strings.EqualFold(t.text, w) {
		p.pos++
		return true
	}
	return false
}

func (p *qparser) query() (*Filter, error) {
	if !p.keyword("select") {
		return nil, fmt.Errorf("must start with SELECT * FROM")
	}
	if t, ok := p.peek(); !ok || t.text != "*" {
		return nil, fmt.Errorf("only SELECT * is served")
	}
	p.pos++
	if !p.keyword("from") {
		return nil, fmt.Errorf("expected FROM after SELECT *")
	}
	t, ok := p.peek()
	if !ok || t.kind != qWord {
		return nil, fmt.Errorf("expected devices or a device template after FROM")
	}
	p.pos++
	f := &Filter{}
	if !strings.EqualFold(t.text, "devices") {
		f.From = t.text
	}
	if p.keyword("as") {
		a, ok := p.peek()
		if !ok || a.kind != qWord {
			return nil, fmt.Errorf("expected an alias after AS")
		}
		f.alias, p.alias = a.text, a.text
		p.pos++
	}
	if t, ok := p.peek(); ok && t.text == "," {
		return nil, fmt.Errorf("several FROM items are not served by the emulator")
	}
	if _, ok := p.peek(); !ok {
		return f, nil
	}
	if !p.keyword("where") {
		t, _ := p.peek()
		return nil, fmt.Errorf("expected WHERE, found %q", t.text)
	}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if t, ok := p.peek(); ok {
		return nil, fmt.Errorf("unexpected %q at offset %d", t.text, t.at)
	}
	f.where = n
	return f, nil
}

func (p *qparser) or() (node, error) {
	l, err := p.and()
	for err == nil && p.keyword("or") {
		var r node
		if r, err = p.and(); err == nil {
			l = orNode{l, r}
		}
	}
	return l, err
}

func (p *qparser) and() (node, error) {
	l, err := p.not()
	for err == nil && p.keyword("and") {
		var r node
		if r, err = p.not(); err == nil {
			l = andNode{l, r}
		}
	}
	return l, err
}

func (p *qparser) not() (node, error) {
	if p.keyword("not") {
		n, err := p.not()
		return notNode{n}, err
	}
	if t, ok := p.peek(); ok && t.text == "(" && t.kind == qPunct {
		p.pos++
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		if t, ok := p.peek(); !ok || t.text != ")" {
			return nil, fmt.Errorf("missing ')'")
		}
		p.pos++
		return n, nil
	}
	return p.comparison()
}

func (p *qparser) operand() (operand, error) {
	t, ok := p.peek()
	if !ok {
		return operand{}, fmt.Errorf("unexpected end of the query")
	}
	p.pos++
	switch t.kind {
	case qString:
		return operand{lit: t.text, isLit: true}, nil
	case qNumber:
		f, _ := strconv.ParseFloat(t.text, 64)
		return operand{lit: f, isLit: true}, nil
	case qWord:
		switch strings.ToLower(t.text) {
		case "true":
			return operand{lit: true, isLit: true}, nil
		case "false":
			return operand{lit: false, isLit: true}, nil
		case "null":
			return operand{lit: nil, isLit: true}, nil
		}
		name := t.text
		if p.alias != "" && strings.HasPrefix(name, p.alias+".") {
			name = name[len(p.alias)+1:]
		}
		if strings.HasPrefix(name, "$") {
			if !validSystemField(name) {
				return operand{}, fmt.Errorf("field %q cannot be queried; system fields are $id, $displayName, $template, $enabled, $provisioned, $simulated", name)
			}
		} else if p.source != SourceTelemetry && p.source != SourceProperties {
			return operand{}, fmt.Errorf("field %q: a %s export filters on system fields ($...) only", name, p.source)
		}
		if i, ok := p.peek(); ok && i.text == "(" && i.kind == qPunct {
			return operand{}, fmt.Errorf("functions such as %s() are not served by the emulator", name)
		}
		return operand{field: name}, nil
	}
	return operand{}, fmt.Errorf("unexpected %q at offset %d", t.text, t.at)
}

func validSystemField(name string) bool {
	switch name {
	case "$id", "$displayName", "$template", "$enabled", "$provisioned", "$simulated":
		return true
	}
	return false
}

func (p *qparser) comparison() (node, error) {
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	t, ok := p.peek()
	if !ok || t.kind != qOp {
		return nil, fmt.Errorf("expected a comparison operator after %s", l)
	}
	p.pos++
	r, err := p.operand()
	if err != nil {
		return nil, err
	}
	if l.isLit == r.isLit {
		return nil, fmt.Errorf("a comparison needs a field and a literal (%s %s %s)", l, t.text, r)
	}
	return cmpNode{l: l, op: t.text, r: r}, nil
}

// env resolves field names for one message.
type env func(name string) (any, bool)

type node interface {
	eval(e env) bool
}

type orNode struct{ l, r node }
type andNode struct{ l, r node }
type notNode struct{ n node }

func (n orNode) eval(e env) bool  { return n.l.eval(e) || n.r.eval(e) }
func (n andNode) eval(e env) bool { return n.l.eval(e) && n.r.eval(e) }
func (n notNode) eval(e env) bool { return !n.n.eval(e) }

type operand struct {
	field string
	lit   any
	isLit bool
}

func (o operand) String() string {
	if o.isLit {
		return fmt.Sprint(o.lit)
	}
	return o.field
}

func (o operand) value(e env) (any, bool) {
	if o.isLit {
		return o.lit, true
	}
	return e(o.field)
}

type cmpNode struct {
	l  operand
	op string
	r  operand
}

// eval compares with SQL's null rule: a field the message lacks (or a
// JSON null) makes the comparison false, except against the literal null:
// "= null" holds for it and "!= null" for a present value.
func (n cmpNode) eval(e env) bool {
	a, aok := n.l.value(e)
	b, bok := n.r.value(e)
	if !aok {
		a = nil
	}
	if !bok {
		b = nil
	}
	if a == nil || b == nil {
		litNull := (n.l.isLit && n.l.lit == nil) || (n.r.isLit && n.r.lit == nil)
		switch {
		case !litNull:
			return false
		case n.op == "=":
			return a == nil && b == nil
		case n.op == "!=" || n.op == "<>":
			return a != nil || b != nil
		}
		return false
	}
	c, ok := compare(a, b)
	if !ok {
		return n.op == "!=" || n.op == "<>"
	}
	switch n.op {
	case "=":
		return c == 0
	case "!=", "<>":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	}
	return false
}

// compare orders two JSON values of the same kind; ok is false for
// values of different kinds (or unordered ones).
func compare(a, b any) (int, bool) {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		if !ok {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	case string:
		y, ok := b.(string)
		if !ok {
			return 0, false
		}
		return strings.Compare(x, y), true
	case bool:
		y, ok := b.(bool)
		if !ok {
			return 0, false
		}
		if x == y {
			return 0, true
		}
		return 1, true
	}
	return 0, false
}

// Match reports whether a message whose fields e resolves passes the
// filter's WHERE clause (the FROM part is checked by the caller).
func (f *Filter) Match(e env) bool {
	if f == nil || f.where == nil {
		return true
	}
	return f.where.eval(e)
}

// lookupPath resolves a dotted path in a JSON object.
func lookupPath(m map[string]any, path string) (any, bool) {
	if v, ok := m[path]; ok {
		return v, true
	}
	cur := any(m)
	for _, part := range strings.Split(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}
