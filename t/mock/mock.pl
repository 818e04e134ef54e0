#!/usr/bin/perl

# Standalone mock LLM backend (the same server the test harness forks).
#
#   perl t/mock/mock.pl [--listen [HOST:]PORT]... [--script FILE]
#                       [--logdir DIR]
#
# --listen   address to listen on, repeatable (default 127.0.0.1:8081)
# --script   a Perl file whose last expression is the handler code ref
#            (see t/mock/LLMMock.pm); default: OpenAI / Anthropic / Gemini
#            answers chosen by path, streamed when the body asks for it
# --logdir   where mock.log and mock.jsonl go (default: a new directory in
#            /tmp, printed at start and left behind)

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use Getopt::Long qw(GetOptions);
use IO::Socket::IP;

use lib dirname(__FILE__);
use LLMMock ();

my (@listen, $script, $logdir);

GetOptions('listen=s' => \@listen, 'script=s' => \$script,
           'logdir=s' => \$logdir)
    or die "usage: $0 [--listen [HOST:]PORT]... [--script FILE] "
         . "[--logdir DIR]\n";

@listen = ('127.0.0.1:8081') unless @listen;
$logdir //= tempdir('llm-mock-XXXXXX', TMPDIR => 1);   # left for a look

my $handler;

if (defined $script) {
    $handler = do $script;
    die "$script: $@" if $@;
    die "$script: does not return a code ref\n" unless ref $handler eq 'CODE';
}

my @socks;

for my $l (@listen) {
    my ($host, $port) = $l =~ /\A(?:(.*):)?(\d+)\z/
        or die "bad --listen \"$l\"\n";

    $host = '127.0.0.1' unless defined $host && length $host;
    $host =~ s/\A\[(.*)\]\z/$1/;

    push @socks, IO::Socket::IP->new(LocalHost => $host, LocalPort => $port,
                                     Listen => 1024, ReuseAddr => 1)
        or die "listen $l: $@\n";
}

print STDERR "llm mock listening on @listen, logging to $logdir\n";

LLMMock::serve(listeners => \@socks, handler => $handler,
               logdir => $logdir);
