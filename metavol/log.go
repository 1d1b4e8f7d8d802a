package metavol

import (
	"fmt"
	"strings"

	"github.com/rs/zerolog"
)

// badgerLogger routes badger's log lines into zerolog. Badger's info lines
// (compactions, replay progress) are debug-level for lmtgt.
type badgerLogger struct{ log zerolog.Logger }

func (l badgerLogger) emit(ev *zerolog.Event, format string, args []any) {
	ev.Msg(strings.TrimRight(fmt.Sprintf(format, args...), "\n"))
}

func (l badgerLogger) Errorf(f string, a ...any)   { l.emit(l.log.Error(), f, a) }
func (l badgerLogger) Warningf(f string, a ...any) { l.emit(l.log.Warn(), f, a) }
func (l badgerLogger) Infof(f string, a ...any)    { l.emit(l.log.Debug(), f, a) }
func (l badgerLogger) Debugf(f string, a ...any)   { l.emit(l.log.Trace(), f, a) }
