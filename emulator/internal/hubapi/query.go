package hubapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// The subset of IoT Hub's query language the emulator runs over twins:
//
//	SELECT * | projection [, projection]... FROM devices | devices.modules
//	  [WHERE condition] [GROUP BY path [, path]...]
//
// FROM devices.modules reads the module twins (each with its deviceId and
// moduleId) instead of the device twins.
//
// A projection is a path (deviceId, tags.a.b, properties.reported.x) or
// COUNT(), each with an optional AS alias. A condition combines
// comparisons (=, !=, <>, <, >, <=, >=) of paths and literals ('text',
// "text", numbers, true, false, null), path IN [literal, ...] and
// IS_DEFINED(path) with AND, OR,
// NOT and parentheses. A comparison of an undefined path or of values of
// different types is false, as in IoT Hub.

// errQuery reports a query the emulator does not understand.
var errQuery = errors.New("query")

// MaxQueryLen is the longest query accepted (IoT Hub: 8 KiB).
const MaxQueryLen = 8 << 10

type query struct {
	modules bool // FROM devices.modules
	star    bool
	proj    []projection
	where   cond // nil: every twin
	groupBy [][]string
}

type projection struct {
	path  []string // nil for COUNT()
	count bool
	alias string
}

type cond interface {
	eval(doc map[string]any) bool
}

type andCond struct{ a, b cond }
type orCond struct{ a, b cond }
type notCond struct{ c cond }
type definedCond struct{ path []string }
type inCond struct {
	l    operand
	vals []any
}
type cmpCond struct {
	op   string
	l, r operand
}

type operand struct {
	path []string // nil for a literal
	lit  any
}

func (c andCond) eval(d map[string]any) bool     { return c.a.eval(d) && c.b.eval(d) }
func (c orCond) eval(d map[string]any) bool      { return c.a.eval(d) || c.b.eval(d) }
func (c notCond) eval(d map[string]any) bool     { return !c.c.eval(d) }
func (c definedCond) eval(d map[string]any) bool { _, ok := lookupPath(d, c.path); return ok }
func (c inCond) eval(d map[string]any) bool {
	for _, v := range c.vals {
		if (cmpCond{op: "=", l: c.l, r: operand{lit: v}}).eval(d) {
			return true
		}
	}
	return false
}

func (o operand) value(d map[string]any) (any, bool) {
	if o.path == nil {
		return o.lit, true
	}
	return lookupPath(d, o.path)
}

func (c cmpCond) eval(d map[string]any) bool {
	l, lok := c.l.value(d)
	r, rok := c.r.value(d)
	if !lok || !rok {
		return false
	}
	switch lv := l.(type) {
	case float64:
		rv, ok := r.(float64)
		if !ok {
			return false
		}
		return compare(c.op, cmpFloat(lv, rv))
	case string:
		rv, ok := r.(string)
		if !ok {
			return false
		}
		return compare(c.op, strings.Compare(lv, rv))
	case bool:
		rv, ok := r.(bool)
		if !ok || (c.op != "=" && c.op != "!=") {
			return false
		}
		return (lv == rv) == (c.op == "=")
	case nil:
		if c.op != "=" && c.op != "!=" {
			return false
		}
		return (r == nil) == (c.op == "=")
	default: // objects and arrays: equality of their JSON
		if c.op != "=" && c.op != "!=" {
			return false
		}
		a, _ := json.Marshal(l)
		b, _ := json.Marshal(r)
		return (string(a) == string(b)) == (c.op == "=")
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func compare(op string, c int) bool {
	switch op {
	case "=":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case ">":
		return c > 0
	case "<=":
		return c <= 0
	case ">=":
		return c >= 0
	}
	return false
}

// lookupPath finds a dotted path in a JSON document; names match
// case-sensitively, as IoT Hub's do for properties.
func lookupPath(d map[string]any, path []string) (any, bool) {
	var cur any = d
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// run evaluates q over docs (twin documents in device id order) and
// returns the result rows.
func (q *query) run(docs []map[string]any) []any {
	var hits []map[string]any
	for _, d := range docs {
		if q.where == nil || q.where.eval(d) {
			hits = append(hits, d)
		}
	}
	if q.star {
		out := make([]any, len(hits))
		for i, h := range hits {
			out[i] = h
		}
		return out
	}
	hasCount := slices.ContainsFunc(q.proj, func(p projection) bool { return p.count })
	if !hasCount && len(q.groupBy) == 0 {
		out := make([]any, 0, len(hits))
		for _, h := range hits {
			out = append(out, q.project(h, 0))
		}
		return out
	}
	// Aggregation: one row per group (one group without GROUP BY).
	type group struct {
		first map[string]any
		n     int
	}
	var order []string
	groups := map[string]*group{}
	for _, h := range hits {
		var key []any
		for _, p := range q.groupBy {
			v, _ := lookupPath(h, p)
			key = append(key, v)
		}
		kb, _ := json.Marshal(key)
		g := groups[string(kb)]
		if g == nil {
			g = &group{first: h}
			groups[string(kb)] = g
			order = append(order, string(kb))
		}
		g.n++
	}
	if len(q.groupBy) == 0 && len(order) == 0 {
		return []any{q.project(map[string]any{}, 0)}
	}
	out := make([]any, 0, len(order))
	for _, k := range order {
		g := groups[k]
		out = append(out, q.project(g.first, g.n))
	}
	return out
}

func (q *query) project(d map[string]any, count int) map[string]any {
	row := map[string]any{}
	for i, p := range q.proj {
		name := p.alias
		if p.count {
			if name == "" {
				name = "$" + strconv.Itoa(i+1)
			}
			row[name] = count
			continue
		}
		if name == "" {
			name = p.path[len(p.path)-1]
		}
		if v, ok := lookupPath(d, p.path); ok {
			row[name] = v
		}
	}
	return row
}

// parseQuery parses the supported subset; errors wrap errQuery and say
// where the query went wrong.
func parseQuery(s string) (*query, error) {
	if len(s) > MaxQueryLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", errQuery, MaxQueryLen)
	}
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	q, err := p.query()
	if err != nil {
		return nil, err
	}
	if !p.done() {
		return nil, p.errorf("unexpected %q", p.peek().text)
	}
	return q, nil
}

type tokKind int

const (
	tokIdent tokKind = iota
	tokString
	tokNumber
	tokSymbol
)

type token struct {
	kind tokKind
	text string
	num  float64
}

func lex(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'' || c == '"':
			j := i + 1
			var b strings.Builder
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, fmt.Errorf("%w: unterminated string at %d", errQuery, i)
			}
			out = append(out, token{kind: tokString, text: b.String()})
			i = j + 1
		case c >= '0' && c <= '9' || (c == '-' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9'):
			j := i + 1
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == 'e' || s[j] == 'E' ||
				((s[j] == '-' || s[j] == '+') && (s[j-1] == 'e' || s[j-1] == 'E'))) {
				j++
			}
			f, err := strconv.ParseFloat(s[i:j], 64)
			if err != nil {
				return nil, fmt.Errorf("%w: bad number %q", errQuery, s[i:j])
			}
			out = append(out, token{kind: tokNumber, text: s[i:j], num: f})
			i = j
		case c == '_' || c == '$' || c < 0x80 && unicode.IsLetter(rune(c)):
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] == '$' || s[j] == '-' || s[j] < 0x80 && (unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j])))) {
				j++
			}
			out = append(out, token{kind: tokIdent, text: s[i:j]})
			i = j
		default:
			for _, sym := range []string{"!=", "<>", "<=", ">=", "=", "<", ">", "(", ")", ",", ".", "*", "[", "]"} {
				if strings.HasPrefix(s[i:], sym) {
					out = append(out, token{kind: tokSymbol, text: sym})
					i += len(sym)
					goto next
				}
			}
			return nil, fmt.Errorf("%w: unexpected character %q at %d", errQuery, c, i)
		next:
		}
	}
	return out, nil
}

type parser struct {
	toks  []token
	pos   int
	depth int // open parentheses
}

func (p *parser) done() bool { return p.pos >= len(p.toks) }

func (p *parser) peek() token {
	if p.done() {
		return token{kind: tokSymbol, text: "end of query"}
	}
	return p.toks[p.pos]
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s (at token %d)", errQuery, fmt.Sprintf(format, args...), p.pos+1)
}

// keyword consumes the case-insensitive keyword kw when it comes next.
func (p *parser) keyword(kw string) bool {
	t := p.peek()
	if !p.done() && t.kind == tokIdent && strings.EqualFold(t.text, kw) {
		p.pos++
		return true
	}
	return false
}

func (p *parser) symbol(s string) bool {
	t := p.peek()
	if !p.done() && t.kind == tokSymbol && t.text == s {
		p.pos++
		return true
	}
	return false
}

func (p *parser) query() (*query, error) {
	if !p.keyword("SELECT") {
		return nil, p.errorf("a query starts with SELECT")
	}
	q := &query{}
	if p.symbol("*") {
		q.star = true
	} else {
		for {
			pr, err := p.projection()
			if err != nil {
				return nil, err
			}
			q.proj = append(q.proj, pr)
			if !p.symbol(",") {
				break
			}
		}
	}
	if !p.keyword("FROM") {
		return nil, p.errorf("want FROM")
	}
	if !p.keyword("devices") {
		return nil, p.errorf("only FROM devices and FROM devices.modules are supported by the emulator")
	}
	if p.symbol(".") {
		if !p.keyword("modules") {
			return nil, p.errorf("only FROM devices and FROM devices.modules are supported by the emulator")
		}
		q.modules = true
	}
	if p.keyword("WHERE") {
		c, err := p.or()
		if err != nil {
			return nil, err
		}
		q.where = c
	}
	if p.keyword("GROUP") {
		if !p.keyword("BY") {
			return nil, p.errorf("want BY after GROUP")
		}
		if q.star {
			return nil, p.errorf("GROUP BY needs projections, not *")
		}
		for {
			path, err := p.path()
			if err != nil {
				return nil, err
			}
			q.groupBy = append(q.groupBy, path)
			if !p.symbol(",") {
				break
			}
		}
	}
	return q, nil
}

func (p *parser) projection() (projection, error) {
	var pr projection
	if p.keyword("COUNT") {
		if !p.symbol("(") || !p.symbol(")") {
			return pr, p.errorf("want COUNT()")
		}
		pr.count = true
	} else {
		path, err := p.path()
		if err != nil {
			return pr, err
		}
		pr.path = path
	}
	if p.keyword("AS") {
		t := p.peek()
		if p.done() || t.kind != tokIdent {
			return pr, p.errorf("want a name after AS")
		}
		p.pos++
		pr.alias = t.text
	}
	return pr, nil
}

var reserved = []string{"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "AS", "GROUP", "BY", "COUNT", "IS_DEFINED", "IN"}

func (p *parser) path() ([]string, error) {
	var out []string
	for {
		t := p.peek()
		if p.done() || t.kind != tokIdent || slices.ContainsFunc(reserved, func(r string) bool { return strings.EqualFold(r, t.text) }) {
			return nil, p.errorf("want a property path, got %q", t.text)
		}
		p.pos++
		out = append(out, t.text)
		if !p.symbol(".") {
			return out, nil
		}
	}
}

func (p *parser) or() (cond, error) {
	c, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.keyword("OR") {
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		c = orCond{c, r}
	}
	return c, nil
}

func (p *parser) and() (cond, error) {
	c, err := p.not()
	if err != nil {
		return nil, err
	}
	for p.keyword("AND") {
		r, err := p.not()
		if err != nil {
			return nil, err
		}
		c = andCond{c, r}
	}
	return c, nil
}

// maxDepth bounds nested NOTs and parentheses (a hostile query cannot
// exhaust the stack).
const maxDepth = 64

func (p *parser) not() (cond, error) {
	depth := 0
	neg := false
	for p.keyword("NOT") {
		neg = !neg
		if depth++; depth > maxDepth {
			return nil, p.errorf("too deeply nested")
		}
	}
	c, err := p.primary()
	if err != nil {
		return nil, err
	}
	if neg {
		return notCond{c}, nil
	}
	return c, nil
}

func (p *parser) primary() (cond, error) {
	if p.symbol("(") {
		if p.depth++; p.depth > maxDepth {
			return nil, p.errorf("too deeply nested")
		}
		defer func() { p.depth-- }()
		c, err := p.or()
		if err != nil {
			return nil, err
		}
		if !p.symbol(")") {
			return nil, p.errorf("want )")
		}
		return c, nil
	}
	if p.keyword("IS_DEFINED") {
		if !p.symbol("(") {
			return nil, p.errorf("want ( after IS_DEFINED")
		}
		path, err := p.path()
		if err != nil {
			return nil, err
		}
		if !p.symbol(")") {
			return nil, p.errorf("want )")
		}
		return definedCond{path}, nil
	}
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	if p.keyword("IN") {
		if !p.symbol("[") {
			return nil, p.errorf("want [ after IN")
		}
		var vals []any
		for !p.symbol("]") {
			if len(vals) > 0 && !p.symbol(",") {
				return nil, p.errorf("want , or ] in an IN list")
			}
			v, err := p.operand()
			if err != nil {
				return nil, err
			}
			if v.path != nil {
				return nil, p.errorf("an IN list holds values, not paths")
			}
			vals = append(vals, v.lit)
		}
		return inCond{l: l, vals: vals}, nil
	}
	t := p.peek()
	if p.done() || t.kind != tokSymbol || !slices.Contains([]string{"=", "!=", "<>", "<", ">", "<=", ">="}, t.text) {
		return nil, p.errorf("want a comparison, got %q", t.text)
	}
	p.pos++
	op := t.text
	if op == "<>" {
		op = "!="
	}
	r, err := p.operand()
	if err != nil {
		return nil, err
	}
	return cmpCond{op: op, l: l, r: r}, nil
}

func (p *parser) operand() (operand, error) {
	t := p.peek()
	if p.done() {
		return operand{}, p.errorf("want a value")
	}
	switch t.kind {
	case tokString:
		p.pos++
		return operand{lit: t.text}, nil
	case tokNumber:
		p.pos++
		return operand{lit: t.num}, nil
	case tokIdent:
		switch strings.ToLower(t.text) {
		case "true", "false":
			p.pos++
			return operand{lit: strings.EqualFold(t.text, "true")}, nil
		case "null":
			p.pos++
			return operand{lit: nil}, nil
		}
		path, err := p.path()
		if err != nil {
			return operand{}, err
		}
		return operand{path: path}, nil
	}
	return operand{}, p.errorf("want a value, got %q", t.text)
}
