package Test::LLM::Link;

# A link between nginx and a Redis of the test's own (t/102, t/114): a
# forked process on a port of its own that relays RESP both ways, reads
# each command and the answer to it, and can hold an answer back or
# change it.  Answers go back to nginx in the order of the commands.
#
#   use Test::LLM::Link;
#   my $pid = link_start($port, $redis_port,
#       answer => sub {
#           my ($conn, $argv, $v) = @_;   # $v: [type, value]
#           return ($v, $hold_ms, $gated);
#       },
#       gate => $file, accept_after => $file);
#
#   answer        called in the link for every answer: $conn numbers the
#                 connection, $argv is the command (strings), $v the
#                 answer as resp_parse() reads it.  It returns the answer
#                 to send (the same or another), how long to hold it
#                 back (ms; 0: no wait) and whether it also waits while
#                 the file "gate" exists.
#   gate          that file (see "answer")
#   accept_after  no connection is accepted before this file exists; the
#                 listen queue is kept full meanwhile, so that a connect
#                 waits for its SYN to be sent again (about 1 s)
#
# The link ends when the test process does (it checks its parent), or
# with kill 'TERM'; link_start()'s links are killed at exit.
#
# A hold file tells an "answer" sub how long to hold one answer back:
# hold_set($file, $ms) writes it (atomically), hold_peek($file) reads
# it, hold_take($file) reads it and sets it back to 0 (once used).

use strict;
use warnings;

use Exporter 'import';
use IO::Select ();
use IO::Socket::INET ();
use POSIX ();
use Time::HiRes ();

our @EXPORT = qw(link_start resp_parse resp_enc
                 hold_set hold_peek hold_take);

my @LINKS;

END { kill 'TERM', $_ for grep { $_ } @LINKS }


# one RESP value at $p of $$b: ([type, value], next) or () if incomplete;
# an array's value is a reference to its elements, each [type, value]
sub resp_parse {
    my ($b, $p) = @_;
    my $e = index($$b, "\r\n", $p);
    return if $e < 0;
    my $t = substr($$b, $p, 1);
    my $line = substr($$b, $p + 1, $e - $p - 1);
    $p = $e + 2;
    return ([$t, $line], $p) if $t eq '+' || $t eq '-' || $t eq ':';
    if ($t eq '$') {
        return (['$', undef], $p) if $line < 0;
        return if length($$b) < $p + $line + 2;
        return (['$', substr($$b, $p, $line)], $p + $line + 2);
    }
    die "link: RESP type '$t'\n" unless $t eq '*';
    return (['*', undef], $p) if $line < 0;
    my @a;
    for (1 .. $line) {
        my ($v, $np) = resp_parse($b, $p);
        return unless $v;
        push @a, $v;
        $p = $np;
    }
    return (['*', \@a], $p);
}


sub resp_enc {
    my ($v) = @_;
    my ($t, $x) = @$v;
    return "$t$x\r\n" if $t eq '+' || $t eq '-' || $t eq ':';
    if ($t eq '$') {
        return "\$-1\r\n" unless defined $x;
        return '$' . length($x) . "\r\n$x\r\n";
    }
    return "*-1\r\n" unless defined $x;
    return '*' . @$x . "\r\n" . join('', map { resp_enc($_) } @$x);
}


sub link_start {
    my ($port, $rport, %opt) = @_;

    my $ls = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                   LocalPort => $port,
                                   Listen => $opt{accept_after} ? 1 : 64,
                                   ReuseAddr => 1)
        or die "link on $port: $!\n";

    my $pid = fork // die "fork: $!\n";

    if ($pid) {
        close $ls;
        push @LINKS, $pid;
        return $pid;
    }

    @LINKS = ();
    _serve($ls, $rport, %opt);
    POSIX::_exit(0);
}


sub _serve {
    my ($ls, $rport, %opt) = @_;

    my $answer = $opt{answer} // sub { return ($_[2], 0, 0) };
    my $gate = $opt{gate};
    my $wait = $opt{accept_after};

    my $sel = IO::Select->new($wait ? () : $ls);
    my (%peer, %buf, %cmds, %out, %id);
    my $conns = 0;
    my $parent = getppid();

    while (1) {
        return if getppid() != $parent;

        if ($wait && -e $wait) {
            $sel->add($ls);
            undef $wait;
        }

        for my $s ($sel->can_read(0.01)) {

            if ($s == $ls) {
                my $c = $ls->accept or next;
                my $r = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                              PeerPort => $rport);
                if (!$r) { close $c; next }
                $peer{$c} = $r;
                $peer{$r} = $c;
                $buf{$c} = $buf{$r} = '';
                $cmds{$c} = [];
                $out{$c} = [];
                $id{$c} = ++$conns;
                $sel->add($c, $r);
                next;
            }

            my $n = sysread($s, my $chunk, 65536);
            my $to = $peer{$s};

            if (!$n) {
                $sel->remove($s, $to);
                for ($s, $to) {
                    delete $peer{$_};
                    delete $buf{$_};
                    delete $cmds{$_};
                    delete $out{$_};
                    delete $id{$_};
                    close $_;
                }
                next;
            }

            $buf{$s} .= $chunk;

            if (exists $cmds{$s}) {

                # nginx's commands: to Redis as they are, remembered

                syswrite($to, $chunk);

                my $p = 0;
                while (my ($v, $np) = resp_parse(\$buf{$s}, $p)) {
                    push @{ $cmds{$s} }, [ map { $_->[1] } @{ $v->[1] } ];
                    $p = $np;
                }
                substr($buf{$s}, 0, $p) = '';
                next;
            }

            # Redis's answers, each to its command

            my $c = $to;
            my $p = 0;

            while (my ($v, $np) = resp_parse(\$buf{$s}, $p)) {
                $p = $np;
                my $argv = shift @{ $cmds{$c} } // [''];
                my ($send, $ms, $gated) = $answer->($id{$c}, $argv, $v);
                my $at = $ms ? Time::HiRes::time() + $ms / 1000 : 0;
                push @{ $out{$c} }, [ resp_enc($send), $at, $gated ];
            }
            substr($buf{$s}, 0, $p) = '';
        }

        # what may go to nginx goes, in order

        my $now = Time::HiRes::time();
        my $open = !(defined $gate && -e $gate);

        for my $c (grep { exists $out{$_} } values %peer) {
            my $q = $out{$c};
            while (@$q && $q->[0][1] <= $now && (!$q->[0][2] || $open)) {
                syswrite($c, (shift @$q)->[0]);
            }
        }
    }
}


sub hold_set {
    my ($file, $ms) = @_;
    open(my $fh, '>', "$file.tmp") or die "$file: $!";
    print $fh "$ms\n";
    close $fh;
    rename "$file.tmp", $file or die "$file: $!";
}

sub hold_peek {
    my ($file) = @_;
    open(my $fh, '<', $file) or return 0;
    my $ms = (<$fh> // 0) + 0;
    close $fh;
    return $ms;
}

sub hold_take {
    my ($file) = @_;
    my $ms = hold_peek($file);
    hold_set($file, 0) if $ms;
    return $ms;
}


1;
